"""`python -m services.intake` runs the intake service."""

from services.intake.app import SERVICE, create_app
from services.intake.settings import IntakeSettings
from shared.runtime import serve

settings = IntakeSettings()
serve(SERVICE, lambda: create_app(settings), settings, settings.intake_port)
