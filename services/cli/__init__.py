"""The casereview command line: a client of the services, not a service itself."""

from services.cli.app import main

__all__ = ["main"]
