"""Cost of the monitors: ``model.fit`` with every monitor at its default frequency vs none.

    python benchmarks/bench_monitors.py [--epochs 10] [--repetitions 3]

Both sides train the cifar_softmax convnet (conv32-pool-conv64-pool-dense128-dense10, Adam
1e-3, batch 128, built by ``recipes.models.convnet``) on the CIFAR-10 sample through the
recipe's tf.data pipeline with validation every epoch, for the recipe's 10 epochs. One side
adds ``monitor_callbacks(MONITOR_DEFAULTS, ...)``: update ratios, activation and gradient
probes, learning rate, filter images, curve PNGs. The whole ``fit`` is timed, first epoch
included, so the monitors' one-time costs (TensorBoard writers, first probes) count. The
order alternates between repetitions. Reported: the median of the per-pair wall-time ratios
(target <= 1.05) and the ratio of each side's fastest run; the process CPU time (all
threads, so it counts the curve plotter's and the file writer's threads too); and the wall
time spent inside the monitors' hooks on the training thread, which other jobs on a shared
machine disturb far less than the whole fit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from _timing import CIFAR_SAMPLE  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from kerasdiag.callbacks import MonitorWarning, monitor_callbacks  # noqa: E402
from kerasdiag.callbacks.factory import MONITOR_DEFAULTS  # noqa: E402
from kerasdiag.config import load_config  # noqa: E402
from kerasdiag.data import load_dataset  # noqa: E402
from kerasdiag.pipeline import build_model, fit  # noqa: E402

HOOKS = ("on_train_begin", "on_epoch_begin", "on_train_batch_begin", "on_epoch_end", "on_train_end")


class HookClock:
    """Adds up the wall time of the hooks a callback defines (training-thread hooks only)."""

    def __init__(self):
        self.seconds = 0.0

    def wrap(self, callback: keras.callbacks.Callback) -> keras.callbacks.Callback:
        for name in HOOKS:
            if getattr(type(callback), name) is getattr(keras.callbacks.Callback, name):
                continue  # keep Keras' view of which hooks are defaults
            method = getattr(callback, name)

            def timed(*args, _method=method, **kwargs):
                start = time.perf_counter()
                try:
                    return _method(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - start

            setattr(callback, name, timed)
        return callback


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

    hook_shares = []

    def timed_fit(with_monitors: bool) -> tuple[float, float]:
        model = build_model(cfg, data)
        clock = HookClock()
        with tempfile.TemporaryDirectory() as run_dir:
            callbacks = monitor_callbacks(monitors, run_dir, data) if with_monitors else []
            callbacks = [clock.wrap(c) for c in callbacks]
            start, cpu = time.perf_counter(), time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MonitorWarning)  # lr advice is not timed here
                fit(cfg, model, data, callbacks)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        if with_monitors:
            hook_shares.append(clock.seconds / wall)
        return wall, cpu

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
    print(f"time in the monitors' hooks on the training thread: median "
          f"{statistics.median(hook_shares):.1%} of the monitored fit "
          f"(per run: {', '.join(f'{h:.1%}' for h in hook_shares)})")  # fmt: skip


if __name__ == "__main__":
    main()
