"""Multi-device training through ``tf.distribute``: ``trainer.strategy=...``.

- ``none``: TensorFlow's default strategy (one device: the GPU if there is one, else the CPU).
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over every GPU of this machine, or over
  every logical CPU device when there is no GPU (which is how the code path is tested on CPU).
- ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy``; the cluster comes from the
  ``TF_CONFIG`` environment variable (without it, one local worker).
- ``auto``: ``multiworker`` when ``TF_CONFIG`` names more than one task, ``mirrored`` when
  there are two GPUs or more, else ``none``.

Batch size and learning rate. ``data.batch_size`` is the *global* batch: Keras splits each
batch evenly over the replicas, so ``global batch = per-replica batch * replicas`` and the
same config computes the same averaged gradient on one device or on eight (up to the order
of float additions). To keep the per-replica batch when adding devices, multiply
``data.batch_size`` by the number of replicas yourself; ``trainer.scale_lr=true`` then
multiplies ``optimizer.lr`` by the number of replicas (the linear scaling rule of Goyal et al.
2017, "Accurate, Large Minibatch SGD"). Scaling is opt-in because it is a heuristic: it holds
for SGD at moderate batch sizes and usually wants a warm-up (``schedule=cosine
schedule.warmup_epochs=...``) beyond that.

Example:
    >>> strategy = get_strategy("mirrored")  # doctest: +SKIP
    >>> with strategy.scope():  # doctest: +SKIP
    ...     model = build_my_model()
    ...     model.compile(optimizer=keras.optimizers.SGD(scaled_learning_rate(0.1, strategy)))
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from kerasdiag.config.schema import STRATEGIES
from kerasdiag.core.errors import ConfigError
from kerasdiag.modeling import multiworker_keras_fix

# One instance per kind and process: collective ops are configured once, and every model of
# a run (sanity variants, members) shares the same devices.
_STRATEGIES: dict[str, tf.distribute.Strategy] = {}


def get_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy ``trainer.strategy`` names; build and compile under its scope.

    Raises ConfigError for an unknown name.
    """
    if name not in STRATEGIES:
        raise ConfigError(
            "trainer.strategy", name, f"must be one of {', '.join(sorted(STRATEGIES))}"
        )
    name = resolve_strategy_name(name)
    if name == "none":
        return tf.distribute.get_strategy()
    if name not in _STRATEGIES:
        if name == "mirrored":
            _STRATEGIES[name] = tf.distribute.MirroredStrategy(devices=replica_devices())
        else:
            multiworker_keras_fix.apply()
            _STRATEGIES[name] = tf.distribute.MultiWorkerMirroredStrategy()
    return _STRATEGIES[name]


def replica_devices() -> list[str]:
    """The devices MirroredStrategy mirrors over: every GPU, or every logical CPU if none."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def scaled_learning_rate(lr: float, strategy: tf.distribute.Strategy, scale: bool) -> float:
    """``lr * replicas`` with ``scale`` (linear scaling rule), else ``lr`` unchanged."""
    return float(lr) * (strategy.num_replicas_in_sync if scale else 1)


def worker_count(strategy: tf.distribute.Strategy) -> int:
    """How many machines (processes) train in lock step under ``strategy``: the tasks of a
    ``MultiWorkerMirroredStrategy``'s cluster, else 1."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    jobs = resolver.cluster_spec().as_dict()
    return max(1, sum(len(jobs.get(job, ())) for job in ("chief", "worker")))


def resolve_strategy_name(name: str) -> str:
    """The strategy ``name`` stands for on this machine: ``auto`` resolved, others as they are."""
    if name != "auto":
        return name
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if sum(len(tasks) for tasks in cluster.values()) > 1:
        return "multiworker"
    return "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"
