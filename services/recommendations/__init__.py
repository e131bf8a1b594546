"""Recommendations: routes pattern snapshots to partnership sub-groups as tracked actions."""
