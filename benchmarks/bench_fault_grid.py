"""The fault grid: every public piece of kerasdiag on task kinds x model families, healthy
and with planted faults, scored the way AUTOTRAINER reports (detection and false-alarm rates).

The cases are ``GRID`` of ``tests/model_zoo.py``: healthy models over task kinds (multi-class
sparse / one-hot / label smoothing, binary, multi-label sigmoids, regression MSE / MAE /
Huber, two outputs with a list or dict of losses and ``loss_weights``) and families (MLP,
LayerNorm + UnitNorm, BatchNorm and GroupNorm conv nets, MLP-mixer, attention, GRU, LSTM,
keras.applications MobileNetV2), then one planted fault each (dead units, raw 0-255 pixels,
double softmax, frozen layers, an ignored input, batch mixing, leaked test rows, random
labels, lr far too low / high, exploding recurrence, vanishing gradients, a gradient bug on
an input and on a kernel). ``RESPONSIBLE`` names the pieces each fault is for.

Per piece: detection = caught among the (fault, responsible piece) pairs; false alarms =
``caught`` on a healthy case; ``inconclusive`` / ``n/a`` on a healthy case are counted apart
(each printed with its reason), never as alarms. Then the per-case grid and the lines.

Usage: ``PYTHONPATH=. python benchmarks/bench_fault_grid.py [case ...] [--quick]
[--pieces a,b] [--faults-only | --healthy-only]`` (``--quick`` leaves out the four CIFAR
models and takes ~7 minutes; the whole grid ~15 minutes on 2 busy CPU cores). Exit 1 on a
missed fault or a false alarm.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from model_zoo import GRID, RESPONSIBLE  # noqa: E402
from model_zoo_run import PIECES, run  # noqa: E402

SLOW = ("mobilenet_v3_small", "efficientnet_b0", "mobilenet_v2", "bn_resnet_grad_bug")
SHORT = {"caught": "CAUGHT", "pass": "pass", "inconclusive": "inc", "n/a": "n/a"}


def rate_table(cases: list, pieces: list[str], cells: dict) -> list[str]:
    """Rows = pieces: the faults each targets, detected/targeted, false alarms/healthy,
    honest 'inconclusive or n/a' on healthy cases, and faults it caught beyond its own."""
    healthy = [c for c in cases if c.fault is None]
    rows = [("piece", "targets", "detected", "false alarms", "inc/n-a", "also caught")]
    for p in pieces:
        own = [c for c in cases if c.fault and p in RESPONSIBLE[c.fault]]
        hit = sum(cells[c.name, p] == "caught" for c in own)
        alarms = sum(cells[c.name, p] == "caught" for c in healthy)
        unsure = sum(cells[c.name, p] in ("inconclusive", "n/a") for c in healthy)
        extra = sorted({c.fault for c in cases if c.fault and c not in own
                        and cells[c.name, p] == "caught"})  # fmt: skip
        targets = sorted({f for f, ps in RESPONSIBLE.items() if p in ps})
        rows.append((p, ",".join(targets) or "-", f"{hit}/{len(own)}",
                     f"{alarms}/{len(healthy)}", f"{unsure}/{len(healthy)}",
                     ",".join(extra) or "-"))  # fmt: skip
    own = [(c, p) for c in cases if c.fault for p in RESPONSIBLE[c.fault] if p in pieces]
    hits = sum(cells[c.name, p] == "caught" for c, p in own)
    alarms = sum(cells[c.name, p] == "caught" for c in healthy for p in pieces)
    rows.append(("all", "", f"{hits}/{len(own)}", f"{alarms}/{len(healthy) * len(pieces)}",
                 "", ""))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]


def case_grid(cases: list, pieces: list[str], cells: dict) -> list[str]:
    """Rows = cases (task kind, family, fault), columns = pieces; a responsible piece's cell
    is starred."""
    name_w = max(len(c.name) for c in cases)
    head = ["case".ljust(name_w), "task".ljust(22), "family".ljust(18)]
    out = [" | ".join(head + [p[:9].ljust(9) for p in pieces])]
    for c in cases:
        cols = [c.name.ljust(name_w), c.task[:22].ljust(22), c.family[:18].ljust(18)]
        for p in pieces:
            mark = "*" if c.fault and p in RESPONSIBLE[c.fault] else ""
            cols.append((SHORT[cells[c.name, p]] + mark).ljust(9))
        out.append(" | ".join(cols))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"cases (default: all of {list(GRID)})")
    parser.add_argument("--pieces", default=",".join(PIECES), help="comma-separated pieces")
    parser.add_argument("--quick", action="store_true", help=f"leave out {SLOW}")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--faults-only", action="store_true")
    group.add_argument("--healthy-only", action="store_true")
    args = parser.parse_args()
    names = args.cases or [n for n in GRID if not (args.quick and n in SLOW)]
    pieces = args.pieces.split(",")
    unknown = [n for n in names if n not in GRID] + [p for p in pieces if p not in PIECES]
    if unknown:
        print(f"unknown cases or pieces: {unknown}", file=sys.stderr)
        return 2
    cases = [GRID[n] for n in names]
    if args.faults_only or args.healthy_only:
        cases = [c for c in cases if (c.fault is None) == args.healthy_only]
    cells: dict = {}
    lines: list[str] = []
    for case in cases:
        for piece in pieces:
            verdict, line, seconds = run(case, piece)
            cells[case.name, piece] = verdict
            lines.append(f"{case.name} / {piece} ({seconds:.1f} s): {verdict}: {line}")
            print(lines[-1], flush=True)
    print("\nper piece (detection among the faults it targets; false alarms on healthy cases)")
    print("\n".join(rate_table(cases, pieces, cells)))
    print("\nper case (CAUGHT = a finding or a failed check; * = a piece the fault targets)")
    print("\n".join(case_grid(cases, pieces, cells)))
    problems = [
        f"missed: {c.name} / {p}"
        for c in cases
        if c.fault
        for p in RESPONSIBLE[c.fault]
        if p in pieces and cells[c.name, p] != "caught"
    ]
    problems += [f"false alarm: {c.name} / {p}" for c in cases if c.fault is None
                 for p in pieces if cells[c.name, p] == "caught"]  # fmt: skip
    print("\n" + ("\n".join(problems) if problems else "every fault caught, no false alarm"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
