"""The HTTP adapter: Speckle's object REST routes over an objstore Store."""

from objstore.server.app import create_app, create_app_from_env
from objstore.server.settings import Settings

__all__ = ["Settings", "create_app", "create_app_from_env"]
