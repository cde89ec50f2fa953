"""Rebuild a run's report: ``python scripts/report.py RUN_DIR [--rediagnose] [--bayes-error E]``.

Writes ``RUN_DIR/report.html`` (one self-contained page: diagnosis with fixes, curves,
monitors, sanity checks, data, model, config) from the files in the run directory. With
``--rediagnose`` (or ``--bayes-error``) ``diagnosis.json`` is computed again first, e.g.
after changing thresholds or learning the human-level error. Exit code 2 with one line for a
missing directory or a bad argument.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kerasdiag.cli import fail  # importing kerasdiag quiets TensorFlow (kerasdiag.core.console)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a kerasdiag run directory")
    parser.add_argument(
        "--rediagnose", action="store_true", help="compute diagnosis.json again first"
    )
    parser.add_argument(
        "--bayes-error",
        type=float,
        default=None,
        help="human/Bayes error (0..1) for the bias/variance table; implies --rediagnose",
    )
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        fail(f"run directory {args.run_dir} does not exist")
    if args.bayes_error is not None and not 0 <= args.bayes_error < 1:
        fail(f"--bayes-error must be in [0, 1), got {args.bayes_error}")

    from kerasdiag.diagnosis import diagnose  # no TensorFlow: a report rebuilds in seconds
    from kerasdiag.report import build_report

    if args.rediagnose or args.bayes_error is not None:
        diagnose(args.run_dir, bayes_error=args.bayes_error)
    path = build_report(args.run_dir, bayes_error=args.bayes_error)
    print(f"report: {path}")
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
