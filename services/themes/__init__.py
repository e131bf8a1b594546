"""Themes: keeps the current reviews and derives versioned cross-agency theme snapshots."""
