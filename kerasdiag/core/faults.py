"""A fault-injection hook for tests: kill the process at a named step of a run.

A run is a sequence of recorded steps (sanity, epochs, test, diagnosis, report), and the
promise is that the same command run again finishes whatever an interrupted run left
undone. Testing that promise needs a process killed at an exact step, which a timer or a
polling parent cannot hit reliably. The pipeline calls :func:`kill_point` at each step
boundary and in the middle of each step; it does nothing unless the environment variable
``KERASDIAG_KILL_AT`` names that point, so it is one dictionary lookup in normal use.

``KERASDIAG_KILL_AT=<step>`` or ``<step>:<n>`` (``epoch:2``: at the second epoch
boundary, ``step:30``: before optimizer step 30). The process kills itself with SIGKILL,
which no handler, ``finally`` block or atexit hook sees, exactly like ``kill -9`` or the
out-of-memory killer. ``KERASDIAG_KILL_WITH=SIGTERM`` (or ``SIGINT``) sends that signal
instead, once, and the process goes on to wherever its handler stops it: a scheduler's
preemption at an exact step. Used by ``tests/test_kill_points.py`` and
``tests/test_resume_files.py``; never set them in a real run.

The points (``KILL_POINTS``), in the order a run passes them, boundaries and the middle of
each step alike:

==========================  ===========================================================
``sanity-stage:<n>``        after the n-th sanity stage (from 1), before the next
``sanity``                  after all the sanity stages (``sanity.json`` written)
``step:<n>``                before optimizer step n (from 0): the middle of an epoch
``backup:<n>``              in an epoch's end: n epochs recorded (metrics.csv,
                            TensorBoard, the monitors, the doctor), their backup not yet
``epoch:<n>``               at the boundary after n epochs (their files and backup written)
``fit``                     after ``fit`` returned (best weights restored), before the test
``test-scored``             in the test: the test split scored, ``test_confusion.json``
                            written, ``test_metrics.json`` not yet
``test``                    after ``test_metrics.json``
``diagnosis-judged``        in the diagnosis: the findings made, ``diagnosis.json`` not
                            yet written
``diagnosis``               after ``diagnosis.json``
``report-section:<n>``      in the report: after its n-th section is rendered (from 1),
                            before ``report.html`` is written
``report``                  after ``report.html``, before the completion marker
==========================  ===========================================================

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
KILL_WITH_ENV = "KERASDIAG_KILL_WITH"
KILL_ONCE_ENV = "KERASDIAG_KILL_ONCE"

# The names the single-run pipeline calls kill_point with (the table above); a test checks
# that the points it names are among them (a misspelt one would never fire).
KILL_POINTS = (
    "sanity-stage", "sanity", "step", "backup", "epoch", "fit", "test-scored", "test",
    "diagnosis-judged", "diagnosis", "report-section", "report",
)  # fmt: skip

_sent = False  # a polite signal is sent once: the process then stops where it stops


def kill_target() -> tuple[str, int | None] | None:
    """The step ``KERASDIAG_KILL_AT`` names, as (name, number or None); None when unset."""
    value = os.environ.get(KILL_AT_ENV, "").strip()
    if not value:
        return None
    name, _, number = value.partition(":")
    return name, int(number) if number else None


def kill_signal() -> signal.Signals:
    """The signal a kill point sends: ``KERASDIAG_KILL_WITH`` (a name such as ``SIGTERM``),
    SIGKILL when it is unset."""
    name = os.environ.get(KILL_WITH_ENV, "").strip().upper() or "SIGKILL"
    try:
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except KeyError:
        raise ValueError(f"{KILL_WITH_ENV}={name!r} is not a signal name") from None


def kill_point(name: str, number: int | None = None) -> None:
    """Fault-injection hook for tests: kill this process if ``KERASDIAG_KILL_AT`` names
    step ``name`` (and ``number``, when the variable gives one). Inert when it is unset."""
    global _sent
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
    signum = kill_signal()
    if signum != signal.SIGKILL:
        if _sent:
            return
        _sent = True
    os.kill(os.getpid(), signum)
