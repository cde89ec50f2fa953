"""Cost of the monitors: ``model.fit`` with every monitor at its default frequency vs none.

    python benchmarks/bench_monitors.py [--epochs 10] [--repetitions 3]

Both sides train the cifar_softmax convnet (conv32-pool-conv64-pool-dense128-dense10, Adam
1e-3, batch 128, built by ``recipes.models.convnet``) on the CIFAR-10 sample through the
recipe's tf.data pipeline with validation every epoch, for the recipe's 10 epochs. One side
adds ``monitor_callbacks(MONITOR_DEFAULTS, ...)``: update ratios, activation and gradient
probes, learning rate, filter images, curve PNGs. The whole ``fit`` is timed, first epoch
included, so the monitors' one-time costs (TensorBoard writers, first probes) count. The
order alternates between repetitions; the median of the per-pair wall-time ratios is the
result (target <= 1.05), next to the ratio of each side's fastest run. The process CPU time (all threads) is shown too: on a machine
shared with other jobs it is steadier than the wall time, and it also counts the work the
curve plotter does on its own thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from omegaconf import OmegaConf  # noqa: E402

from kerasdiag.callbacks import MonitorWarning, monitor_callbacks  # noqa: E402
from kerasdiag.callbacks.factory import MONITOR_DEFAULTS  # noqa: E402
from kerasdiag.config import load_config  # noqa: E402
from kerasdiag.data import load_dataset  # noqa: E402
from kerasdiag.pipeline import build_model, fit  # noqa: E402

CIFAR_SAMPLE = (
    Path(__file__).resolve().parents[2] / "shared/data/cifar10-sample/cifar-10-batches-py"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", default=str(CIFAR_SAMPLE))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()

    overrides = ["recipe=cifar_softmax", f"data.path={args.data_path}",
                 f"trainer.epochs={args.epochs}", "trainer.verbose=0"]  # fmt: skip
    cfg = load_config(overrides)
    data = load_dataset(cfg.data)
    monitors = OmegaConf.create(MONITOR_DEFAULTS)

    def timed_fit(with_monitors: bool) -> tuple[float, float]:
        model = build_model(cfg, data)
        with tempfile.TemporaryDirectory() as run_dir:
            callbacks = monitor_callbacks(monitors, run_dir, data) if with_monitors else []
            start, cpu = time.perf_counter(), time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MonitorWarning)  # lr advice is not timed here
                fit(cfg, model, data, callbacks)
            return time.perf_counter() - start, time.process_time() - cpu

    steps = -(-len(data.y_train) // int(cfg.data.batch_size))
    print(f"cifar_softmax: {len(data.y_train)} training images, batch {cfg.data.batch_size} "
          f"({steps} steps/epoch), {args.epochs} epochs, {args.repetitions} repetitions")  # fmt: skip
    print("monitor defaults:", ", ".join(f"{k}={v}" for k, v in MONITOR_DEFAULTS.items()))
    print(f"{'rep':>4}{'wall none':>11}{'monitors':>10}{'ratio':>8}"
          f"{'cpu none':>11}{'monitors':>10}{'ratio':>8}")  # fmt: skip
    wall_ratios, cpu_ratios = [], []
    walls, cpus = {True: [], False: []}, {True: [], False: []}
    for rep in range(args.repetitions):
        order = (False, True) if rep % 2 == 0 else (True, False)
        times = {flag: timed_fit(flag) for flag in order}
        for flag, (wall, cpu) in times.items():
            walls[flag].append(wall)
            cpus[flag].append(cpu)
        (wall0, cpu0), (wall1, cpu1) = times[False], times[True]
        wall_ratios.append(wall1 / wall0)
        cpu_ratios.append(cpu1 / cpu0)
        print(f"{rep:>4}{wall0:>11.2f}{wall1:>10.2f}{wall_ratios[-1]:>8.3f}"
              f"{cpu0:>11.2f}{cpu1:>10.2f}{cpu_ratios[-1]:>8.3f}")  # fmt: skip
    print(f"\nmedian ratio fit(all monitors) / fit(none): wall {statistics.median(wall_ratios):.3f} "
          f"(target <= 1.05), cpu {statistics.median(cpu_ratios):.3f}")  # fmt: skip
    # The fastest run of each side is the one least disturbed by other jobs on the machine.
    print(f"ratio of the fastest runs: wall {min(walls[True]) / min(walls[False]):.3f}, "
          f"cpu {min(cpus[True]) / min(cpus[False]):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
