"""`python -m services.themes` runs the themes service."""

from services.themes.app import SERVICE, create_app
from services.themes.settings import ThemesSettings
from shared.runtime import serve

settings = ThemesSettings()
serve(SERVICE, lambda: create_app(settings), settings, settings.themes_port)
