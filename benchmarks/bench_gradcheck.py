"""Gradient-check cost on the cifar_softmax model, measured side by side in one run.

Model: the ``cifar_softmax`` recipe's convnet (conv32-pool-conv64-pool-dense128-dense10 on
32x32x3, logits, sparse softmax cross-entropy), 2 real CIFAR-10 sample images. Prints:

- ``check_gradients``: all variables, default dims (8 per variable), h=1e-5, retries;
- ``check_gradients_fast``: 4 random directions over all parameters;
- ``tf.test.compute_gradient`` over the same variables: the full Jacobian of the float64 loss
  with respect to every parameter. Its cost is two forward passes per parameter, so it is
  timed on the small variables (all biases and the first kernel) and extrapolated to the
  whole model at the measured cost per column;

with the ratios. Each check runs twice: the first run pays TensorFlow's one-time start-up
(the first traced function in the process), the second is what every later check costs.
Targets on 2 CPU cores: a full sampled check under ~5 s, fast mode under ~1 s.

Run: ``python benchmarks/bench_gradcheck.py``
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import CIFAR_SAMPLE  # noqa: E402

from kerasdiag.checks.gradcheck import check_gradients, check_gradients_fast  # noqa: E402
from kerasdiag.checks.gradcheck.objective import ModelObjective  # noqa: E402
from kerasdiag.config import load_config  # noqa: E402
from kerasdiag.data.cifar import read_batch  # noqa: E402
from kerasdiag.modeling.losses import build_loss  # noqa: E402
from recipes.models import convnet  # noqa: E402

CIFAR_BATCH = CIFAR_SAMPLE / "data_batch_1"
# compute_gradient is timed on variables up to this size (biases, first conv kernel)
JACOBIAN_TIMED_SIZE = 1000


def cifar_examples(n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_batch(CIFAR_BATCH)
    x = images.astype("float32") / 255.0
    x = (x - x.mean(axis=(0, 1, 2))) / x.std(axis=(0, 1, 2))
    return x[:n], labels[:n]


def cifar_softmax_model() -> keras.Model:
    cfg = load_config(["recipe=cifar_softmax"])
    keras.utils.set_random_seed(0)
    model = convnet(cfg.model, (32, 32, 3), 10)
    model.compile(loss=build_loss(cfg.loss), optimizer="adam")
    return model


def timed(fn):
    """``(wall seconds, CPU seconds of this process, result)``: CPU time is what the
    machine's load does not inflate (other processes sharing the cores)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def compute_gradient_cost(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict:
    """Time tf.test.compute_gradient (float64, tf.function loss) on the small variables."""
    objective = ModelObjective.build(model, x, y, samples=len(x))
    values = objective.values

    def loss_of(i: int):
        @tf.function(autograph=False)
        def f(v):
            data, reg, _ = objective.forward([*values[:i], v, *values[i + 1 :]], fingerprint=False)
            return data + reg

        return f

    columns, seconds, cpu = 0, 0.0, 0.0
    for i, v in enumerate(values):
        if int(np.prod(v.shape)) > JACOBIAN_TIMED_SIZE:
            continue
        f = loss_of(i)
        f(v)  # trace outside the timing, as check_gradients' own traces are inside it
        t, c, _ = timed(lambda f=f, v=v: tf.test.compute_gradient(f, [v], delta=1e-5))
        columns += int(np.prod(v.shape))
        seconds += t
        cpu += c
    total = sum(int(np.prod(v.shape)) for v in values)
    return {
        "columns": columns,
        "seconds": seconds,
        "total_columns": total,
        "estimate": seconds / columns * total,
        "cpu_estimate": cpu / columns * total,
    }


def main() -> None:
    x, y = cifar_examples()
    model = cifar_softmax_model()
    params = model.count_params()
    print(
        f"cifar_softmax convnet: {params:,} parameters in {len(model.trainable_variables)} "
        f"variables; 2 CIFAR-10 images; {os.cpu_count()} CPU cores"
    )
    full = [timed(lambda: check_gradients(model, x, y)) for _ in range(2)]
    fast = [timed(lambda: check_gradients_fast(model, x, y)) for _ in range(2)]
    jac = compute_gradient_cost(model, x, y)
    report = full[-1][2]
    checked = sum(r.dims for r in report.rows)
    evaluations = sum(len(a.attempts) for a in report.elements if a.part == "data") * 2
    print(report)
    print(fast[-1][2])
    (t_full, c_full), (t_fast, c_fast) = full[-1][:2], fast[-1][:2]
    rows = [
        (
            "check_gradients (sampled)",
            full[0][0],
            t_full,
            c_full,
            f"{checked} entries, {evaluations} passes",
        ),
        ("check_gradients_fast", fast[0][0], t_fast, c_fast, "4 directions, 8 passes"),
        (
            "tf.test.compute_gradient",
            float("nan"),
            jac["estimate"],
            jac["cpu_estimate"],
            f"measured {jac['seconds']:.2f} s on {jac['columns']:,} columns, "
            f"extrapolated to {jac['total_columns']:,}",
        ),
    ]
    print(f"\n{'method':27s} {'first run':>9s} {'later runs':>10s} {'(CPU)':>10s}  detail")
    for name, first, later, cpu, detail in rows:
        first_s = "-" if np.isnan(first) else f"{first:.2f} s"
        print(f"{name:27s} {first_s:>9s} {later:>8.2f} s {cpu:>8.2f} s  {detail}")
    print(
        f"\nratios (wall): compute_gradient / sampled = {jac['estimate'] / t_full:,.0f}x, "
        f"compute_gradient / fast = {jac['estimate'] / t_fast:,.0f}x, "
        f"sampled / fast = {t_full / t_fast:.1f}x"
    )
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"targets: sampled < 5 s: {'met' if t_full < 5 else 'MISSED'} ({t_full:.2f} s wall, "
        f"{c_full:.2f} s CPU); fast < 1 s: {'met' if t_fast < 1 else 'MISSED'} "
        f"({t_fast:.2f} s wall, {c_fast:.2f} s CPU)"
    )


if __name__ == "__main__":
    main()
