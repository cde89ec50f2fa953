"""Run every public piece of kerasdiag on a zoo entry: one verdict and one line per piece.

A verdict is ``pass`` (no finding), ``caught`` (a finding or a failed check, named in the
line), ``inconclusive``, or ``n/a`` (the piece says, in one line, why it cannot apply).
Shared by the zoo's and the fault grid's tests and benchmarks.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from model_zoo import Entry, sample_weights

from kerasdiag.callbacks import (
    ActivationHistograms,
    GradientMonitor,
    ProbeBatch,
    TrainingDoctor,
    UpdateRatioMonitor,
)
from kerasdiag.callbacks.base import MonitorWarning
from kerasdiag.checks.data import check_leakage
from kerasdiag.checks.gradcheck import check_gradients, check_gradients_fast, check_layer_gradients
from kerasdiag.checks.sanity import (
    check_batch_independence,
    check_initial_loss,
    check_input_dependence,
    check_regularization_raises_loss,
    overfit_small_subset,
)
from kerasdiag.data.dataset import Dataset

PIECES = (
    "check_gradients",
    "check_gradients_fast",
    "check_layer_gradients",
    "initial_loss",
    "regularization",
    "overfit",
    "input_dependence",
    "batch_independence",
    "leakage",
    "monitors",
    "doctor",
)
# How many examples the gradient checks take, and the probe batch of the monitors.
GRAD_SAMPLES = 4
PROBE = 32


def take(data: Any, idx: Any) -> Any:
    """``data`` (an array or a list/dict of arrays) at ``idx``."""
    return keras.tree.map_structure(lambda a: np.asarray(a)[idx], data)


def size(data: Any) -> int:
    return len(keras.tree.flatten(data)[0])


def gradcheck(entry: Entry, model: keras.Model, x: Any, y: Any) -> tuple[str, str]:
    report = check_gradients(model, x, y, samples=GRAD_SAMPLES, dims_per_variable=3)
    return _report_verdict(report, report.failing and sorted({r.name for r in report.failing}))


def fast(entry: Entry, model: keras.Model, x: Any, y: Any) -> tuple[str, str]:
    report = check_gradients_fast(model, x, y, samples=GRAD_SAMPLES)
    return _report_verdict(report, report.suspects)


def _report_verdict(report: Any, named: Any) -> tuple[str, str]:
    first = str(report).splitlines()[0]
    if report.status == "passed":
        return "pass", first
    if report.status == "failed":
        return "caught", f"{first}; suspects {list(named or [])[:3]}"
    return "inconclusive", first


def layer_check(entry: Entry, model: keras.Model, x: Any, y: Any) -> tuple[str, str]:
    if entry.layer is None:
        return "n/a", (
            "a subclassed model has no symbolic layer inputs to feed one layer from: call "
            "check_layer_gradients(layer, inputs) with inputs of your choice"
        )
    layer = model.get_layer(entry.layer)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.input
    feed = keras.Model(inputs, layer.input)
    inputs = keras.ops.convert_to_numpy(feed(take(x, slice(0, 1)), training=False))
    # A full Jacobian costs two passes per input entry: a 4x4 crop of an image, the first
    # four steps of a sequence.
    if inputs.ndim == 4:
        inputs = inputs[:, :4, :4, :]
    elif inputs.ndim == 3:
        inputs = inputs[:, :4, :]
    report = check_layer_gradients(layer, inputs)
    return _report_verdict(report, [r.name for r in report.failing])


def initial_loss(entry: Entry, model: keras.Model, x: Any, y: Any) -> tuple[str, str]:
    r = check_initial_loss(model, (x, y), max_examples=128)
    return _stage(r)


def regularization(entry: Entry, model: keras.Model, x: Any, y: Any) -> tuple[str, str]:
    r = check_regularization_raises_loss(model, (x, y), max_examples=64)
    return _stage(r)


def overfit(entry: Entry, model: keras.Model, x: Any, y: Any) -> tuple[str, str]:
    r = overfit_small_subset(model, (x, y), num_examples=20)
    return _stage(r)


def splits(entry: Entry, x: Any, y: Any) -> dict[str, tuple[Any, Any]]:
    """Training, validation and test splits (60/20/20, shuffled once); a ``leak`` entry's
    training split also holds a quarter of the test rows, as a concatenation of files can."""
    n = size(x)
    idx = np.random.default_rng(0).permutation(n)
    a, b = int(n * 0.6), int(n * 0.8)
    parts = {"train": idx[:a], "val": idx[a:b], "test": idx[b:]}
    if entry.fit.get("leak"):
        test = parts["test"]
        parts["train"] = np.concatenate([parts["train"], test[: len(test) // 4]])
    return {k: (take(x, i), take(y, i)) for k, i in parts.items()}


def dataset(entry: Entry, x: Any, y: Any) -> Any:
    """The splits as a kerasdiag ``Dataset`` (one input array), else the training pair: a
    check that can score on held-out examples then does (with random labels a model scored
    on its own training rows shows the memorising, not the input's use)."""
    s = splits(entry, x, y)
    if not isinstance(x, np.ndarray):
        return s["train"]
    classes = int(np.max(y)) + 1 if np.issubdtype(np.asarray(y).dtype, np.integer) else 0
    return Dataset(entry.name, *s["train"], *s["val"], *s["test"], num_classes=classes)


def input_dependence(entry: Entry, model: keras.Model, x: Any, y: Any) -> tuple[str, str]:
    r = check_input_dependence(model, dataset(entry, x, y))
    return _stage(r)


def batch_independence(entry: Entry, model: keras.Model, x: Any, y: Any) -> tuple[str, str]:
    r = check_batch_independence(model, (x, y))
    return _stage(r)


def leakage(entry: Entry, model: keras.Model, x: Any, y: Any) -> tuple[str, str]:
    s = splits(entry, x, y)
    if not isinstance(x, np.ndarray):
        return (
            "n/a",
            "check_leakage compares one array per split (several inputs: call it per input)",
        )
    r = check_leakage(x_train=s["train"][0], x_val=s["val"][0], x_test=s["test"][0],
                      y_train=s["train"][1], y_val=s["val"][1], y_test=s["test"][1])  # fmt: skip
    return _stage(r)


def _stage(r: Any) -> tuple[str, str]:
    if r.passed is None:
        return ("inconclusive" if r.inconclusive else "n/a"), r.message
    return ("pass" if r.passed else "caught"), r.message


def _fit(entry: Entry, model: keras.Model, x: Any, y: Any, callbacks: list) -> None:
    n = size(x)
    idx = np.random.default_rng(0).permutation(n)
    # Whole batches only: oneDNN (TF 2.21, CPU) crashes the BN ResNet's step on a short
    # last batch.
    cut = int(n * 0.8) // entry.batch_size * entry.batch_size
    train, val = idx[:cut], idx[cut:]
    kwargs: dict[str, Any] = {"epochs": entry.epochs, "verbose": 0, "callbacks": callbacks}
    xt, yt = take(x, train), take(y, train)
    if entry.fit.get("tf_data"):
        parts = (xt, yt, sample_weights(yt)) if entry.fit.get("sample_weight") else (xt, yt)
        ds = tf.data.Dataset.from_tensor_slices(parts).batch(entry.batch_size)
        model.fit(ds, validation_data=(take(x, val), take(y, val)), **kwargs)
    else:
        model.fit(
            xt, yt, batch_size=entry.batch_size,
            validation_data=(take(x, val), take(y, val)), **kwargs,
        )  # fmt: skip


def train(entry: Entry, model: keras.Model, x: Any, y: Any) -> dict[str, tuple[str, str]]:
    """One ``fit`` with the three monitors sharing a probe batch and a TrainingDoctor that
    reads them: the verdicts of ``monitors`` and ``doctor``."""
    probe = ProbeBatch(take(x, slice(0, PROBE)), take(y, slice(0, PROBE)))
    grads, ratios = GradientMonitor(probe, freq=10), UpdateRatioMonitor(freq=5)
    callbacks: list = [grads, ratios]
    line = ""
    try:
        probe.extractor(model)
        callbacks.append(ActivationHistograms(probe, freq=10))
    except ValueError as exc:
        line = f"activations n/a: {str(exc)[:70]}...; "
    doc = TrainingDoctor(probe.x, probe.y, verbose=0, thresholds=entry.doctor, monitors=callbacks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MonitorWarning)
        _fit(entry, model, x, y, [*callbacks, doc])
    found = [str(w.message) for w in caught if issubclass(w.category, MonitorWarning)]
    if found:
        monitor = ("caught", line + " | ".join(m[:150] for m in found[:3]))
    else:
        monitor = ("pass", line + f"{len(grads.history)} gradient probes, quiet")
    if doc.findings:
        doctor = ("caught", "; ".join(f"{f.symptom}: {f.evidence}"[:150] for f in doc.findings[:3]))
    else:
        short = " (one-epoch run: bias/variance not judged)" if entry.doctor else ""
        doctor = ("pass", f"no symptoms{short}")
    return {"monitors": monitor, "doctor": doctor}


RUNNERS: dict[str, Callable[..., tuple[str, str]]] = {
    "check_gradients": gradcheck,
    "check_gradients_fast": fast,
    "check_layer_gradients": layer_check,
    "initial_loss": initial_loss,
    "regularization": regularization,
    "overfit": overfit,
    "input_dependence": input_dependence,
    "batch_independence": batch_independence,
    "leakage": leakage,
}
TRAINED = ("monitors", "doctor")
_trained: dict[str, tuple[dict[str, tuple[str, str]], float]] = {}


def run(entry: Entry, piece: str) -> tuple[str, str, float]:
    """(verdict, one line, seconds) of ``piece`` on a freshly built ``entry``.

    ``monitors`` and ``doctor`` come from one training run, kept for the other piece.
    """
    if piece in TRAINED and entry.name in _trained:
        verdicts, seconds = _trained.pop(entry.name)
        return (*verdicts[piece], seconds)
    model, x, y = entry.build()
    start = time.perf_counter()
    if piece in TRAINED:
        verdicts = train(entry, model, x, y)
        seconds = time.perf_counter() - start
        _trained[entry.name] = (verdicts, seconds)
        return (*verdicts[piece], seconds)
    verdict, line = RUNNERS[piece](entry, model, x, y)
    return verdict, line, time.perf_counter() - start
