"""Fault injection: the services as processes on their own broker and store."""
