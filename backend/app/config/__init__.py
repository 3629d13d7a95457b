"""Settings: the only package that reads the environment (see settings.py)."""

from app.config.settings import BACKEND_DIR, Settings, get_settings

__all__ = ["BACKEND_DIR", "Settings", "get_settings"]
