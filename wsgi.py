"""Lets plain `flask run` find the app in a checkout (settings from TASKSERVER_* variables)."""
from taskserver import create_app

__all__ = ["create_app"]
