"""Intake: validates submissions, refuses personal data, pseudonymises, de-duplicates."""
