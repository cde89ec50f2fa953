"""A fault-injection hook for tests: kill the process at a named step of a run.

A run is a sequence of recorded steps (sanity, epochs, test, diagnosis, report), and the
promise is that the same command run again finishes whatever an interrupted run left
undone. Testing that promise needs a process killed at an exact step, which a timer or a
polling parent cannot hit reliably. The pipeline calls :func:`kill_point` at each step
boundary; it does nothing unless the environment variable ``KERASDIAG_KILL_AT`` names that
step, so it is one dictionary lookup in normal use.

``KERASDIAG_KILL_AT=<step>`` or ``<step>:<n>`` (``epoch:2``: at the second epoch
boundary, ``step:30``: before optimizer step 30). The process kills itself with SIGKILL,
which no handler, ``finally`` block or atexit hook sees, exactly like ``kill -9`` or the
out-of-memory killer. Used by ``tests/test_kill_points.py``; never set it in a real run.

A search names its own steps (``tests/test_search_kill_points.py``): in the process that holds
the oracle, ``search-handed-out:<trial>``, ``search-result-received:<trial>``,
``search-recorded:<trial>`` and ``search-results``; in a process that trains trials,
``search-trial-start:<trial>``, ``search-epoch:<epoch>`` and ``search-trained:<trial>``.
A search's worker processes inherit the variable, and a killed worker is replaced by another
that would reach the same step: ``KERASDIAG_KILL_ONCE=<file>`` makes the kill happen once
across processes (the first to get there creates the file and dies; the others see it).

No TensorFlow here.
"""

from __future__ import annotations

import os
import signal

KILL_AT_ENV = "KERASDIAG_KILL_AT"
KILL_ONCE_ENV = "KERASDIAG_KILL_ONCE"


def kill_target() -> tuple[str, int | None] | None:
    """The step ``KERASDIAG_KILL_AT`` names, as (name, number or None); None when unset."""
    value = os.environ.get(KILL_AT_ENV, "").strip()
    if not value:
        return None
    name, _, number = value.partition(":")
    return name, int(number) if number else None


def kill_point(name: str, number: int | None = None) -> None:
    """Fault-injection hook for tests: SIGKILL this process if ``KERASDIAG_KILL_AT`` names
    step ``name`` (and ``number``, when the variable gives one). Inert when it is unset."""
    target = kill_target()
    if target is None or target[0] != name:
        return
    if target[1] is not None and target[1] != number:
        return
    once = os.environ.get(KILL_ONCE_ENV)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # another process of this run was killed here already
    os.kill(os.getpid(), signal.SIGKILL)
