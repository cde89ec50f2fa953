"""End the command-line process without the interpreter's teardown of TensorFlow.

Why we depart from a plain ``sys.exit``: once a run is over, Python's finalization takes
TensorFlow apart object by object (its thousands of modules, every traced function, the
runtime's own destructors). On this project's 2-core machine that took 1.2 s after a plain
Keras script had printed its last line, and 1.6 s after kerasdiag's default run, a tenth of
the whole run spent on memory the operating system frees at once anyway.

So the command line ends with :func:`exit_process`, which does what finalization does that
anyone can observe, in the same order, and then leaves with ``os._exit``:

1. the threading module's shutdown: its exit hooks (``concurrent.futures`` executors told to
   stop) and a join of every non-daemon thread, as the interpreter does first;
2. ``atexit`` handlers: ``logging.shutdown`` (handlers flushed and closed),
   ``multiprocessing``'s join of its children, TensorFlow's and Hydra's own hooks;
3. ``sys.stdout`` and ``sys.stderr`` flushed.

Nothing else is lost when a run has finished: every file it keeps is written through
:mod:`kerasdiag.core.io` (complete, renamed into place, closed) or by writers closed when
training ends (TensorBoard's, which the report has already read back). The command line calls
this only then (:func:`kerasdiag.cli.hydra_app.run_app`); a run stopped part-way may hold
buffered records only finalization writes, and a library user's process ends as theirs would.

Example:
    >>> from kerasdiag.core.process_exit import exit_code_of
    >>> exit_code_of(SystemExit(None)), exit_code_of(SystemExit(3))
    (0, 3)
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_code_of(exc: SystemExit) -> int:
    """The status ``sys.exit`` would give for ``exc``: None is 0, an int itself, any other
    value 1 (a message Python prints to stderr first)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    return 1


def exit_process(code: int = 0) -> NoReturn:
    """Run the interpreter's observable shutdown (threads, ``atexit``, flushed output), then
    end the process with ``code`` at once."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None or threading.current_thread() is not threading.main_thread():
        sys.exit(code)  # no such hook here: the interpreter's own (slower) exit does it all
    try:
        shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):  # closed or replaced streams
                pass
        os._exit(code)
