"""The command line: what ``scripts/train.py`` and ``scripts/report.py`` share (one-line
errors, exit codes, the run directory's claim and log; ``hydra_app``) and what a valid
config runs (``dispatch``: a search, an ensemble or one training).

Importing this package does not start TensorFlow: a bad config is refused in seconds.
"""

from kerasdiag.cli.hydra_app import (
    Preflight,
    console_log,
    exit_on_user_error,
    fail,
    job_config,
    load_inputs,
    os_error_line,
    run_app,
    task_started,
)
from kerasdiag.search.launch import prestart_workers

__all__ = [
    "Preflight",
    "console_log",
    "exit_on_user_error",
    "fail",
    "job_config",
    "load_inputs",
    "os_error_line",
    "prestart_workers",
    "run_app",
    "task_started",
]
