"""Ensembles: seeds, top search models, checkpoints of one run, the weights' EMA.

    python scripts/train.py recipe=cifar_softmax ensemble=seeds ensemble.members=3

Every ensemble is one Keras model (``ensemble.keras``) that feeds one input to all members
and averages their softmax probabilities in a single forward pass; ``ensemble.json`` puts
each member's test score beside the best single score and the ensemble's.

This package imports TensorFlow only when a name that needs it is used, so
:func:`validate_ensemble_config` runs before TensorFlow starts.
"""

from __future__ import annotations

from kerasdiag.core.lazy import lazy_exports

# public name -> module that defines it
_LAZY = {
    "CheckpointScore": "kerasdiag.ensemble.selection",
    "best_checkpoints": "kerasdiag.ensemble.selection",
    "build_ensemble": "kerasdiag.ensemble.model",
    "load_member": "kerasdiag.ensemble.model",
    "parse_checkpoint_name": "kerasdiag.ensemble.selection",
    "predict_probabilities": "kerasdiag.ensemble.model",
    "run_ensemble": "kerasdiag.ensemble.run",
    "train_member": "kerasdiag.ensemble.run",
    "validate_ensemble_config": "kerasdiag.config.schema",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
