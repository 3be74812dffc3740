"""Exceptions that every layer may raise (this module imports nothing from gcnet)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A config key holds a value that is not allowed; the message names the key."""
