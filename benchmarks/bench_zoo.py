"""The model zoo table: every public piece of kerasdiag on every zoo model.

Rows are the models of ``tests/model_zoo.py`` (healthy ones, then the planted faults), columns
the pieces (gradient checks, sanity checks, monitors, doctor). Each cell is ``pass`` (no
finding), ``caught`` (a finding or a failed check), ``inconclusive`` or ``n/a``, and the one
line the piece printed follows the table. A healthy model must show no ``caught``; a faulty
one must be caught by the pieces that target its fault.

Usage: ``PYTHONPATH=. python benchmarks/bench_zoo.py [model ...] [--pieces a,b]``
(about 10 minutes on 2 CPU cores for the whole zoo; MobileNetV2 alone takes half of it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# RESPONSIBLE: what each planted fault must be caught by (the fault grid's table too).
from model_zoo import RESPONSIBLE, ZOO  # noqa: E402
from model_zoo_run import PIECES, run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"models (default: all of {list(ZOO)})")
    parser.add_argument("--pieces", default=",".join(PIECES), help="comma-separated pieces")
    args = parser.parse_args()
    models = args.models or list(ZOO)
    pieces = args.pieces.split(",")
    unknown = [m for m in models if m not in ZOO] + [p for p in pieces if p not in PIECES]
    if unknown:
        print(f"unknown models or pieces: {unknown}", file=sys.stderr)
        return 2
    cells, lines, problems = {}, [], []
    for name in models:
        entry = ZOO[name]
        for piece in pieces:
            verdict, line, seconds = run(entry, piece)
            cells[name, piece] = verdict
            lines.append(f"{name} / {piece} ({seconds:.1f} s): {verdict}: {line}")
            print(lines[-1], flush=True)
            if entry.fault is None and verdict in ("caught", "inconclusive"):
                problems.append(f"false finding: {name} / {piece}")
            if entry.fault and piece in RESPONSIBLE[entry.fault] and verdict != "caught":
                problems.append(f"missed fault: {name} / {piece}")
    width = max(len(m) for m in models)
    print("\n" + "model".ljust(width) + " | " + " | ".join(pieces))
    for name in models:
        row = [cells[name, p].ljust(len(p)) for p in pieces]
        print(name.ljust(width) + " | " + " | ".join(row))
    print("\n" + ("\n".join(problems) if problems else "no false finding, every fault caught"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
