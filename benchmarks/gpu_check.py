"""The accelerator path in one table: precision, XLA, the monitors, search workers, ensembles.

    python benchmarks/gpu_check.py            # on a GPU: ResNet-20 on the CIFAR-10 sample
    python benchmarks/gpu_check.py --small    # anywhere: a tiny ResNet on 512 images

Every row runs in a process of its own (Keras' dtype policy and XLA settings are global to a
process, and a GPU's memory is held until its process ends):

- ``cifar_resnet`` trained with float32 and with ``trainer.mixed_precision=true``, each with
  and without ``trainer.jit_compile=true``: seconds per epoch (the first epoch, which traces
  and compiles, is dropped) and test accuracy;
- the same float32 fit with every monitor on: its seconds per epoch over the plain fit's;
- a search whose two worker processes train side by side on the one device
  (``tuner.workers=2``): both must finish, each trial once in ``search.csv``;
- an ensemble of two members scored as one Keras graph (one ``predict`` of the averaged
  softmaxes) against the members scored one after another.

It prints one table (markdown, for docs/multi-device.md) and, with ``--json FILE``, writes the
rows. The device column says what ran each row: compare timings only within one device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import CIFAR_SAMPLE, EpochTimer  # noqa: E402

FIT_VARIANTS = {
    "float32": {"mixed_precision": False, "jit_compile": False, "monitors": False},
    "float32 + XLA": {"mixed_precision": False, "jit_compile": True, "monitors": False},
    "mixed float16": {"mixed_precision": True, "jit_compile": False, "monitors": False},
    "mixed float16 + XLA": {"mixed_precision": True, "jit_compile": True, "monitors": False},
    "float32 + all monitors": {"mixed_precision": False, "jit_compile": False, "monitors": True},
}


def sizes(small: bool, epochs: int | None) -> dict[str, Any]:
    """How much each row trains: the whole sample on an accelerator, a sliver with --small."""
    if small:
        return {"limit": 512, "epochs": epochs or 2, "blocks": 1, "batch": 64}
    return {"limit": None, "epochs": epochs or 6, "blocks": 3, "batch": 128}


def overrides(size: dict[str, Any], data_path: str) -> list[str]:
    found = [
        "recipe=cifar_resnet",
        f"data.path={data_path}",
        f"data.batch_size={size['batch']}",
        f"trainer.epochs={size['epochs']}",
        f"model.blocks_per_stage={size['blocks']}",
        "trainer.verbose=0",
        "trainer.early_stopping.enabled=false",
        "sanity=off",
        # the recipe's 2 warm-up epochs, fewer when the run is shorter
        f"schedule.warmup_epochs={min(2, size['epochs'] - 1)}",
    ]
    return found + ([f"data.limit={size['limit']}"] if size["limit"] else [])


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU ({os.cpu_count()} cores)"
    details = tf.config.experimental.get_device_details(gpus[0])
    return details.get("device_name", "GPU")


# --- rows, each run in a child process -------------------------------------------------------


def fit_row(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train one precision/XLA/monitor variant; seconds per epoch and test accuracy."""
    from kerasdiag.callbacks.factory import monitor_callbacks
    from kerasdiag.config import load_config
    from kerasdiag.data import load_dataset
    from kerasdiag.modeling.factory import build_model, steps_per_epoch
    from kerasdiag.training.pipeline import evaluate_test, fit

    options = FIT_VARIANTS[variant]
    size = sizes(args.small, args.epochs)
    cfg = load_config(
        overrides(size, args.data_path)
        + [
            f"trainer.mixed_precision={str(options['mixed_precision']).lower()}",
            f"trainer.jit_compile={str(options['jit_compile']).lower()}",
            f"monitors={'default' if options['monitors'] else 'off'}",
        ]
    )
    data = load_dataset(cfg.data)
    model = build_model(cfg, data)
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as run_dir:
        callbacks: list[Any] = [timer]
        if options["monitors"]:
            monitors = monitor_callbacks(
                cfg.monitors,
                run_dir,
                data,
                steps_per_epoch=steps_per_epoch(cfg, data),
                epochs=int(cfg.trainer.epochs),
            )
            callbacks = [*monitors.all, timer]
        fit(cfg, model, data, callbacks)
        accuracy = evaluate_test(cfg, model, data)["accuracy"]
    timed = timer.epochs[1:] or timer.epochs
    return {
        "seconds_per_epoch": sorted(timed)[len(timed) // 2],
        "test_accuracy": float(accuracy),
        "note": f"{len(data.y_train)} training images, {size['epochs']} epochs, first dropped",
    }


def search_row(args: argparse.Namespace) -> dict[str, Any]:
    """Two worker processes training trials side by side on one device; both must finish."""
    size = sizes(args.small, 1)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "search"
        command = [
            sys.executable,
            str(ROOT / "scripts/train.py"),
            *overrides(size, args.data_path),
            "monitors=off",
            "tuner=random",
            "tuner.workers=2",
            "tuner.trials_per_process=1",
            "tuner.stages=[{trials:2,epochs:1}]",
            f"hydra.run.dir={run_dir}",
        ]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            return {"seconds": wall, "ok": False, "note": f"exit {done.returncode}: {tail[0]}"}
        rows = (run_dir / "search.csv").read_text().strip().splitlines()[1:]
    return {
        "seconds": wall,
        "ok": len(rows) == 2,
        "note": f"2 workers, {len(rows)} of 2 trials in search.csv",
    }


def ensemble_row(args: argparse.Namespace) -> dict[str, Any]:
    """Two members scored as one graph against one after another (same test images)."""
    import keras
    import numpy as np

    from kerasdiag.config import load_config
    from kerasdiag.data import load_dataset
    from kerasdiag.ensemble.model import build_ensemble
    from kerasdiag.modeling.factory import build_model
    from kerasdiag.training.pipeline import fit

    size = sizes(args.small, 1)
    cfg = load_config(overrides(size, args.data_path) + ["monitors=off"])
    data = load_dataset(cfg.data)
    members = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        member = build_model(cfg, data)
        fit(cfg, member, data, [])
        members.append(member)
    ensemble = build_ensemble(members)
    batch = int(cfg.data.batch_size)

    def timed(predict) -> tuple[float, np.ndarray]:
        predict()  # trace once
        start = time.perf_counter()
        result = predict()
        return time.perf_counter() - start, result

    one_graph, probabilities = timed(lambda: ensemble.predict(data.x_test, batch, verbose=0))
    apart, _ = timed(
        lambda: [keras.ops.softmax(m.predict(data.x_test, batch, verbose=0)) for m in members]
    )
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == data.y_test))
    return {
        "seconds": one_graph,
        "test_accuracy": accuracy,
        "ratio": one_graph / apart,
        "note": f"2 members, {len(data.y_test)} test images; ratio = one graph / one by one",
    }


def child(args: argparse.Namespace) -> None:
    row = {"row": args.row, "device": device_name()}
    if args.row in FIT_VARIANTS:
        row |= fit_row(args.row, args)
    elif args.row == "search":
        row |= search_row(args)
    else:
        row |= ensemble_row(args)
    print("GPU_CHECK_ROW " + json.dumps(row))


# --- the parent: one child per row, one table ------------------------------------------------


def run_child(row: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--row", row, "--data-path", args.data_path]
    command += ["--small"] if args.small else []
    command += ["--epochs", str(args.epochs)] if args.epochs else []
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    for line in done.stdout.splitlines():
        if line.startswith("GPU_CHECK_ROW "):
            return json.loads(line.removeprefix("GPU_CHECK_ROW "))
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
    return {"row": row, "device": "?", "ok": False, "note": f"exit {done.returncode}: {tail[0]}"}


def table(rows: list[dict[str, Any]]) -> str:
    base = next((r for r in rows if r["row"] == "float32" and "seconds_per_epoch" in r), None)
    lines = [
        "| row | device | seconds | vs float32 | test accuracy | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        seconds = r.get("seconds_per_epoch", r.get("seconds"))
        ratio = r.get("ratio")
        if "seconds_per_epoch" in r and base is not None:
            ratio = r["seconds_per_epoch"] / base["seconds_per_epoch"]
        cells = [
            r["row"],
            r["device"],
            "-"
            if seconds is None
            else f"{seconds:.2f}" + ("/epoch" if "seconds_per_epoch" in r else ""),
            "-" if ratio is None else f"{ratio:.2f}",
            "-" if "test_accuracy" not in r else f"{r['test_accuracy']:.3f}",
            ("" if r.get("ok", True) else "FAILED: ") + r.get("note", ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a tiny ResNet on 512 images")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--data-path", default=str(CIFAR_SAMPLE))
    parser.add_argument("--rows", default=None, help="comma-separated subset of the rows")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--row", default=None, help=argparse.SUPPRESS)  # a child's one row
    args = parser.parse_args()
    if args.row:
        child(args)
        return
    names = [*FIT_VARIANTS, "search", "ensemble"]
    if args.rows:
        names = [n.strip() for n in args.rows.split(",")]
        unknown = sorted(set(names) - {*FIT_VARIANTS, "search", "ensemble"})
        if unknown:
            parser.error(f"--rows: unknown row(s) {unknown}")
    rows = []
    for name in names:
        rows.append(run_child(name, args))
        print(f"{name}: done", file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if not all(r.get("ok", True) for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
