"""Cost of the monitors: ``model.fit`` with every monitor at its default frequency vs none.

The default frequency adapts to the run (``probe_schedule``: twice per epoch until 20
probes are taken, then at least once per epoch): 36 steps per epoch for 10 epochs probe
every 18 steps, 20 probes per run; a longer run (``--epochs 30``) takes its 20 probes in
the first 10 epochs and one per epoch after.

    python benchmarks/bench_monitors.py [--epochs 10] [--repetitions 8] [--control] [--batch-size 32]

Both sides train the cifar_softmax convnet (conv32-pool-conv64-pool-dense128-dense10, Adam
1e-3, batch 128, built by ``recipes.models.convnet``) on the CIFAR-10 sample through the
recipe's tf.data pipeline with validation every epoch, for the recipe's 10 epochs. One side
adds ``monitor_callbacks(MONITOR_DEFAULTS, ...)``: update ratios, activation and gradient
probes (one shared probe batch), learning rate, filter images, curve PNGs. The whole
``fit`` is timed, first epoch included, so the monitors' one-time costs (TensorBoard
writers, tracing the probe pass, the first probes) count. The order rotates between
repetitions.

The budget: the monitors add at most 5% to the fit plus 1 s per run (printed as "added wall
time"; a long run's ratio tends to 1.05 or less, a short one's includes the fixed second).
Reported, as monitors / none: the median of the per-repetition ratios of
whole-fit wall time, and of process CPU time (all threads, so the curve plotter's and the
file writer's threads count); and the wall time inside the monitors' hooks on the training
thread, which the machine's mood disturbs far less, split into the run's set-up (before
the first epoch and in it: writers, the probe pass's trace, the first two probes) and its
steady state (the epochs after the first, as a share of their wall time). This VM runs
identical epochs in ~1.3 s or ~2.4 s at random, so a whole fit moves by +-15% between
repetitions: the printed parts (set-up, then each epoch with its validation and epoch-end
work) show it. ``--control`` adds a second side without monitors: its ratio to the first is
what the noise alone gives.
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
from _timing import CIFAR_SAMPLE, print_ratios, side_by_side  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from kerasdiag.callbacks import MonitorWarning, monitor_callbacks  # noqa: E402
from kerasdiag.callbacks.factory import MONITOR_DEFAULTS, probe_schedule  # noqa: E402
from kerasdiag.config import load_config  # noqa: E402
from kerasdiag.data import load_dataset  # noqa: E402
from kerasdiag.modeling.factory import build_model  # noqa: E402
from kerasdiag.training.pipeline import fit  # noqa: E402

# The monitors' budget: a share of the fit, plus a fixed allowance per run for what does not
# grow with it (opening the TensorBoard runs, tracing the probe pass, the first 20 probes that
# even the shortest run gets).
BUDGET_SHARE = 0.05
BUDGET_SECONDS = 1.0

HOOKS = ("on_train_begin", "on_epoch_begin", "on_train_batch_begin", "on_epoch_end", "on_train_end")


class HookClock:
    """Adds up the wall time of the hooks a callback defines (training-thread hooks only);
    ``epochs`` holds the running total at the start of each epoch (``marker`` records it)."""

    def __init__(self):
        self.seconds = 0.0
        self.epochs: list[float] = []

    def marker(self) -> keras.callbacks.Callback:
        clock = self

        class Marker(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                clock.epochs.append(clock.seconds)

        return Marker()

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
    parser.add_argument("--repetitions", type=int, default=8)
    parser.add_argument("--control", action="store_true", help="add a second side with none")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="override the recipe's 128: more steps per epoch, so the at-least-20-probes "
        "minimum binds less (32: 141 steps per epoch, a probe every 70)",
    )
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the set-up is measured to the second epoch)")

    overrides = ["recipe=cifar_softmax", f"data.path={args.data_path}",
                 f"trainer.epochs={args.epochs}", "trainer.verbose=0"]  # fmt: skip
    if args.batch_size:
        overrides.append(f"data.batch_size={args.batch_size}")
    cfg = load_config(overrides)
    data = load_dataset(cfg.data)
    monitors = OmegaConf.create(MONITOR_DEFAULTS)
    hook_shares: list[float] = []
    setup_seconds: list[float] = []
    steady_shares: list[float] = []
    probes: list[int] = []

    def variant(with_monitors: bool):
        def run(marks: keras.callbacks.Callback) -> float:
            model = build_model(cfg, data)
            clock = HookClock()
            with tempfile.TemporaryDirectory() as run_dir:
                watch = (
                    monitor_callbacks(monitors, run_dir, data, steps_per_epoch=steps,
                                      epochs=args.epochs)
                    if with_monitors
                    else None
                )  # fmt: skip
                callbacks = [clock.wrap(c) for c in watch.all] if watch else []
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MonitorWarning)  # lr advice is not timed here
                    fit(cfg, model, data, [marks, clock.marker(), *callbacks])
                wall = time.perf_counter() - start
            if with_monitors:
                hook_shares.append(clock.seconds / wall)
                # set-up: everything up to the start of the second epoch; steady state: the
                # epochs after the first, up to the start of the last (whose end holds the
                # final writes), against the wall time between the same marks
                setup_seconds.append(clock.epochs[1])
                epoch_starts = marks.marks
                if args.epochs > 2:  # two epochs have no steady state: set-up, then the end
                    steady_wall = epoch_starts[-1] - epoch_starts[1]
                    steady_shares.append((clock.epochs[-1] - clock.epochs[1]) / steady_wall)
                probes.append(len(watch.activations.history))
            return clock.seconds

        return run

    steps = -(-len(data.y_train) // int(cfg.data.batch_size))
    variants = {"none": variant(False), "monitors": variant(True)}
    if args.control:
        variants["none (control)"] = variant(False)

    print(f"cifar_softmax: {len(data.y_train)} training images, batch {cfg.data.batch_size} "
          f"({steps} steps/epoch), {args.epochs} epochs, {args.repetitions} repetitions, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
    schedule = probe_schedule(steps, args.epochs)
    planned = schedule.steps(steps * args.epochs)
    print("monitor defaults:", ", ".join(f"{k}={v}" for k, v in MONITOR_DEFAULTS.items()),
          f"(None: every {schedule.freq} steps to step {schedule.until}, then every "
          f"{schedule.then}: {len(planned)} probes planned)")  # fmt: skip
    print(f"{'rep':>4}  {'side':<16}{'wall s':>8}{'cpu s':>8}{'hooks s':>9}  epochs s")

    def each(rep, name, t, hook_seconds):
        parts = " ".join(f"{p:.2f}" for p in t.parts)
        print(f"{rep:>4}  {name:<16}{t.wall:>8.2f}{t.cpu:>8.2f}{hook_seconds:>9.2f}  {parts}",
              flush=True)  # fmt: skip

    times = side_by_side(variants, args.repetitions, each)
    print()
    print_ratios(times, "none")
    added = [m.wall - n.wall for m, n in zip(times["monitors"], times["none"], strict=True)]
    allowance = BUDGET_SHARE * statistics.median(n.wall for n in times["none"]) + BUDGET_SECONDS
    print(f"added wall time: median {statistics.median(added):.2f} s (per repetition "
          f"{min(added):.2f} to {max(added):.2f}); budget {BUDGET_SHARE:.0%} of the plain fit + "
          f"{BUDGET_SECONDS:.0f} s = {allowance:.2f} s: "
          f"{'within' if statistics.median(added) <= allowance else 'OVER'}")  # fmt: skip
    steady = (f"steady state (epochs 2 to {args.epochs - 1}) "
              f"{statistics.median(steady_shares):.1%} of their wall time"
              if steady_shares else "no steady state in 2 epochs")  # fmt: skip
    print(f"time in the monitors' hooks on the training thread: median "
          f"{statistics.median(hook_shares):.1%} of the monitored fit; set-up (to the second "
          f"epoch) {statistics.median(setup_seconds):.2f} s; {steady}")  # fmt: skip
    print(f"probes per monitored run: {sorted(set(probes))}")


if __name__ == "__main__":
    main()
