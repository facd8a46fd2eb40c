"""The admin HTTP API of `lockd serve`: ``create_app(settings)`` builds it (see lockd.api.app)."""

from lockd.api.app import create_app

__all__ = ["create_app"]
