"""taskclient: the worker host of taskserver. Pulls tasks, runs them, reports back."""
from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
