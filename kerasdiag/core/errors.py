"""Errors that kerasdiag reports to a person as one line (exit code 2), not as a traceback."""

from __future__ import annotations

# A value echoed back in a one-line message is cut to this many characters: a 10 kB override
# (a pasted file, a runaway shell expansion) must not bury the cause it is refused for.
MAX_SHOWN = 100


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis and its full length.

    Example:
        >>> shorten("x" * 300, 10)
        'xxxxxxxxx… (300 characters)'
    """
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text)} characters)"


class KerasdiagError(Exception):
    """Base class: a problem with the user's input that one line can explain."""

    exit_code = 2


class ConfigError(KerasdiagError, ValueError):
    """An invalid configuration value. The message names the full key and the bad value
    (shortened: see :func:`shorten`); ``value`` keeps it whole for the code that catches it."""

    def __init__(self, key: str, value: object, requirement: str):
        self.key = key
        self.value = value
        self.requirement = requirement
        super().__init__(f"invalid config: {key}={shorten(repr(value))}: {requirement}")


class DataError(KerasdiagError, ValueError):
    """Missing, malformed or hostile data. The message names the file or the problem."""
