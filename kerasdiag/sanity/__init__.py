"""Sanity checks before training: initial loss, regularization, overfitting.

Each check returns a :class:`StageResult` and leaves the model it is given unchanged::

    from kerasdiag.sanity import check_initial_loss, overfit_small_subset
    print(check_initial_loss(model, dataset).message)
    print(overfit_small_subset(model, dataset).message)

Names load lazily: importing this package does not start TensorFlow.
"""

from __future__ import annotations

from kerasdiag._lazy import lazy_exports

# public name -> module that defines it
_LAZY = {
    "StageResult": "kerasdiag.sanity.result",
    "expected_initial_loss": "kerasdiag.sanity.expected",
    "check_initial_loss": "kerasdiag.sanity.initial_loss",
    "check_regularization_raises_loss": "kerasdiag.sanity.regularization",
    "overfit_small_subset": "kerasdiag.sanity.overfit",
    "check_input_dependence": "kerasdiag.sanity.baseline",
    "check_batch_independence": "kerasdiag.sanity.batch_independence",
    "run_sanity_stages": "kerasdiag.sanity.stages",
    "SanityCheckFailed": "kerasdiag.sanity.stages",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
