"""SIGTERM and SIGINT end a run politely: at the next safe point, with a backup, in one line.

A cluster scheduler or a spot-instance preemption sends SIGTERM (and, some seconds later,
SIGKILL); a person presses Ctrl-C (SIGINT). Python's defaults die at once (SIGTERM: no
message, the partial epoch lost, temporary files left) or raise ``KeyboardInterrupt`` at
whatever bytecode runs (half a backup written, a traceback). Instead the handler installed
here only records the signal: doing work inside a signal handler would interrupt the very
write it should protect. The code that can stop safely asks :func:`stop_requested`:
:class:`kerasdiag.callbacks.StopOnSignal` at each batch end (it backs up at that step and
leaves ``fit``), or at the start of training. It raises :class:`RunInterrupted`, a
:class:`KerasdiagError` whose ``exit_code`` is ``128 + signal`` (130 for SIGINT, 143 for
SIGTERM, what shells and schedulers read as "ended by that signal"), so the command line
prints one ``error:`` line saying how to resume.

A second SIGTERM or SIGINT while stopping ends the process at once (same exit code): the
person insists, or the scheduler's grace period is short. Whatever it leaves half-written
is a ``.tmp-*`` file the next start removes.

No TensorFlow here: the command line installs the handlers before TensorFlow starts.

Example:
    >>> from kerasdiag.core.signals import install_stop_handlers, stop_requested
    >>> install_stop_handlers("run the same command again")  # doctest: +SKIP
    >>> stop_requested() is None  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
from collections.abc import Sequence
from types import FrameType

from kerasdiag.core.errors import KerasdiagError

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
DEFAULT_RESUME_HINT = "run the same command again"

_requested: int | None = None
_resume_hint: str = DEFAULT_RESUME_HINT


class RunInterrupted(KerasdiagError):
    """A run stopped on SIGTERM/SIGINT at a safe point; the same command resumes it.

    ``exit_code`` is ``128 + signum`` (143 for SIGTERM, 130 for SIGINT), as a shell reports a
    process ended by that signal, so schedulers that requeue preempted jobs still see it.
    """

    def __init__(self, signum: int, where: str, resumable: bool = True):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        then = f"to resume, {_resume_hint}" if resumable else "nothing is left to resume"
        super().__init__(f"stopped by {signal_name(signum)} {where}; {then}")


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15: the name a person knows the signal by."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Only records the signal: the safe points read it. The second one is the exception:
    # the person (or the scheduler) insists, so the process ends here and now.
    global _requested
    if _requested is not None:
        line = f"error: {signal_name(signum)} while stopping: ended at once; {_resume_hint}\n"
        os.write(2, line.encode())
        os._exit(128 + signum)
    _requested = signum


def install_stop_handlers(resume_hint: str | None = None) -> bool:
    """Make SIGTERM and SIGINT request a polite stop instead of killing the process.

    Call from the main thread before training (Python only lets the main thread set
    handlers); returns False, changing nothing, from any other thread. ``resume_hint`` ends
    the ``error:`` line (``"run the same command again: python ..."``). Any stop already
    requested is forgotten.
    """
    global _requested, _resume_hint
    if threading.current_thread() is not threading.main_thread():
        return False
    _requested = None
    _resume_hint = resume_hint or DEFAULT_RESUME_HINT
    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_signal)
    return True


def stop_requested() -> int | None:
    """The signal number of a requested stop, or None: what a safe point checks."""
    return _requested


def raise_if_stop_requested(where: str, resumable: bool = True) -> None:
    """At a safe point: raise :class:`RunInterrupted` (``where`` completes its line) if asked.

    ``resumable=False`` once the work is complete: the line then says so instead of how to
    resume.
    """
    if _requested is not None:
        raise RunInterrupted(_requested, where, resumable)


def forget_stop_request() -> None:
    """Clear a requested stop (a library user who handled it and trains on)."""
    global _requested
    _requested = None


def resume_command(argv: Sequence[str], run_dir: str | os.PathLike | None = None) -> str:
    """How to resume: ``run the same command again: python ARGV`` (with the run directory).

    A run started without ``hydra.run.dir=`` got a new timestamped directory; running the very
    same command would start another, so the directory is added to the line.
    """
    args = list(argv)
    multirun = any(a in ("-m", "--multirun") for a in args)
    if (
        run_dir is not None
        and not multirun
        and not any(a.startswith("hydra.run.dir=") for a in args)
    ):
        args.append(f"hydra.run.dir={os.fspath(run_dir)}")
    return f"{DEFAULT_RESUME_HINT}: python {shlex.join(args)}"
