"""Exceptions shared by the agent and the server."""

from __future__ import annotations


class MiniObservError(Exception):
    """Base class of every error MiniObserv raises on purpose."""


class ConfigError(MiniObservError, ValueError):
    """The environment holds a missing or invalid setting; the message names the variable."""


class ValidationError(MiniObservError, ValueError):
    """Input broke a rule of the data model; ``field`` is the path of the offending value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    def prefixed(self, prefix: str) -> ValidationError:
        """Return the same error with ``prefix`` put before the field path."""
        if not self.field:
            return ValidationError(prefix, self.message)
        sep = "" if self.field.startswith("[") else "."
        return ValidationError(f"{prefix}{sep}{self.field}", self.message)
