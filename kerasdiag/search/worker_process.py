"""The command a search's worker process runs (:mod:`kerasdiag.search.worker` says what a
worker does, and its exit codes):

    python -m kerasdiag.search.worker_process CONFIG.yaml RUN_DIR MAX_TRIALS [MEMORY_MB]

A module of its own, so that the process starts as the command line does: the cyclic
collector is paused before :mod:`kerasdiag.search.worker` loads TensorFlow and TensorFlow is
then exempted from its passes (:mod:`kerasdiag.core.heap`; with the collector walking
TensorFlow's objects, each trial of a 12-trial digits search took ~0.3 s longer in a worker
than in the search's own process), and a worker that finished its trials ends without the
interpreter's second-long teardown of TensorFlow, which the search would wait for
(:mod:`kerasdiag.core.process_exit`).
"""

from __future__ import annotations

import sys
from typing import NoReturn

from kerasdiag.core.heap import pause_collection, resume_collection
from kerasdiag.core.process_exit import exit_process


def run(argv: list[str]) -> NoReturn:
    """Run one worker process on ``argv`` (CONFIG.yaml RUN_DIR MAX_TRIALS [MEMORY_MB]) and
    exit with its code."""
    pause_collection()
    from kerasdiag.search import worker  # TensorFlow loads here

    resume_collection()
    code = worker.main(argv)
    if code in (0, worker.RECYCLE_EXIT_CODE):  # every result reported, every file closed
        exit_process(code)
    sys.exit(code)


if __name__ == "__main__":
    run(sys.argv[1:])
