"""Two repairs that let Keras 3's ``fit`` run under ``MultiWorkerMirroredStrategy``.

Keras 3 (up to at least 3.15, keras-team/keras#20585, open upstream) fails the first step of
any ``fit`` across several workers:

1. ``TensorFlowTrainer._maybe_symbolic_build`` reduces the whole first batch, an ``(x, y)``
   tuple of ``PerReplica`` values, with one ``strategy.reduce`` call. The collective strategy
   does not flatten nested values and raises "Attempt to convert a value (PerReplica...)".
   Building needs only shapes and dtypes, so the repaired build takes this worker's first
   local replica's batch instead.
2. ``reduce_per_replica`` averages every log value across workers with ``axis=0``, which is
   invalid for the scalar losses and metrics ``train_step`` returns. The repair averages
   scalars with ``axis=None`` (over replicas only) and keeps ``axis=0`` for batched values.

Everything else (gradient all-reduce, variable sync) is Keras' and TensorFlow's own. The
repairs are applied once per process by :func:`apply` (``kerasdiag.modeling.distribute`` calls it when
it builds the multi-worker strategy) and change nothing for other strategies.
"""

from __future__ import annotations

import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as tf_trainer

_APPLIED = False


def _is_multiworker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def apply() -> None:
    """Install both repairs (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = tf_trainer.reduce_per_replica

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or not _is_multiworker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            data_batch = tree.map_structure(
                lambda v: (
                    strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v
                ),
                next(it),
            )
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if not (_is_multiworker(strategy) and reduction in ("auto", "mean")):
            return original_reduce(values, strategy, reduction)

        def mean(v):
            rank = strategy.experimental_local_results(v)[0].shape.rank
            return strategy.reduce("MEAN", v, axis=0 if rank else None)

        return tree.map_structure(mean, values)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    _APPLIED = True
