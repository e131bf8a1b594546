"""The three casereview services: intake, themes and recommendations."""
