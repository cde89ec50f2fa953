"""What a per-epoch backup writes in a long run: the curve plotter's step record in
``state.json`` as JSON (how it was kept) against arrays in ``.npy`` files written once (how
RunBackup keeps it now), side by side.

    python benchmarks/bench_backup_size.py [--epochs 100] [--steps 1000]

A CurvePlotter tracked by a RunBackup holds (batches, running mean) for every training step
of the run. The benchmark fills it as a run of ``--epochs`` epochs of ``--steps`` steps
would, backs up after every epoch, and reports the bytes written by the last backup and by
all of them, the size of ``state.json`` at the end, and the seconds the backups took.
Target: the last epoch's backup writes well under a megabyte.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerasdiag.callbacks import CurvePlotter  # noqa: E402
from kerasdiag.callbacks.run_backup import RunBackup  # noqa: E402


class JsonSteps(CurvePlotter):
    """The step record as JSON lists in state.json (the layout before the .npy files)."""

    def backup_state(self) -> dict:
        state = super().backup_state()
        state["steps"] = {e: v.tolist() for e, v in state["steps"].items()}
        return state


def backups(plotter: CurvePlotter, epochs: int, steps: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with tempfile.TemporaryDirectory() as folder:
        backup = RunBackup(Path(folder) / "backup", track=[plotter])
        backup.set_model(model)
        written, last, seconds = 0, 0, 0.0
        for epoch in range(epochs):
            plotter._steps[epoch] = [(n + 1, float(2.3 * np.exp(-epoch / 30) + rng.normal()))
                                     for n in range(steps)]  # fmt: skip
            plotter._epoch_steps[epoch] = steps
            plotter._epoch_index.append(epoch)
            for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
                plotter.epochs[key].append(float(rng.random()))
            before = {p.name: p.stat().st_mtime_ns for p in backup.backup_dir.glob("*")}
            start = time.perf_counter()
            backup._save(epoch + 1, 0)
            seconds += time.perf_counter() - start
            last = sum(
                p.stat().st_size
                for p in backup.backup_dir.glob("*")
                if before.get(p.name) != p.stat().st_mtime_ns
            )
            written += last
        state = (backup.backup_dir / "state.json").stat().st_size
    return {"last": last, "total": written, "state": state, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    results = {
        "JSON in state.json": backups(JsonSteps(tempfile.gettempdir()), args.epochs, args.steps),
        ".npy files": backups(CurvePlotter(tempfile.gettempdir()), args.epochs, args.steps),
    }
    print(f"{args.epochs} epochs x {args.steps} steps, a backup after every epoch")
    print(f"{'':20} {'last backup':>12} {'all backups':>12} {'state.json':>11} {'seconds':>8}")
    for name, r in results.items():
        print(f"{name:20} {r['last'] / 1e6:10.3f} MB {r['total'] / 1e6:10.1f} MB "
              f"{r['state'] / 1e6:8.3f} MB {r['seconds']:8.1f}")  # fmt: skip
    old, new = results.values()
    print(f"\nlast backup: {new['last'] / old['last']:.3f} x the bytes; all backups: "
          f"{new['total'] / old['total']:.3f} x; target: last backup < 1 MB")  # fmt: skip


if __name__ == "__main__":
    main()
