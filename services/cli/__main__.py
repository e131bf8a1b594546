"""`python -m services.cli` runs the `casereview` command."""

from services.cli import main

main()
