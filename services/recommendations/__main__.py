"""`python -m services.recommendations` runs the recommendations service."""

from services.recommendations.app import SERVICE, create_app
from services.recommendations.settings import RecommendationsSettings
from shared.runtime import serve

settings = RecommendationsSettings()
serve(SERVICE, lambda: create_app(settings), settings, settings.recommendations_port)
