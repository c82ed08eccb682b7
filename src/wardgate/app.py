"""Assembly: `create_app(settings)` builds the services and returns the ASGI application."""

from __future__ import annotations

from wardgate.config.settings import Settings
from wardgate.gateway import Gateway
from wardgate.http.application import ASGIApp, build_application


def create_app(settings: Settings) -> ASGIApp:
    """Build the ASGI application for these settings."""
    return build_application(Gateway.build(settings))
