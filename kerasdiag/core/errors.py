"""Errors that kerasdiag reports to a person as one line (exit code 2), not as a traceback."""

from __future__ import annotations


class KerasdiagError(Exception):
    """Base class: a problem with the user's input that one line can explain."""

    exit_code = 2


class ConfigError(KerasdiagError, ValueError):
    """An invalid configuration value. The message names the full key and the bad value."""

    def __init__(self, key: str, value: object, requirement: str):
        self.key = key
        self.value = value
        self.requirement = requirement
        super().__init__(f"invalid config: {key}={value!r}: {requirement}")


class DataError(KerasdiagError, ValueError):
    """Missing, malformed or hostile data. The message names the file or the problem."""
