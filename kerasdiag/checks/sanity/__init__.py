"""Sanity checks before training: initial loss, regularization, overfitting.

Each check returns a :class:`StageResult` and leaves the model it is given unchanged::

    from kerasdiag.checks.sanity import check_initial_loss, overfit_small_subset
    print(check_initial_loss(model, dataset).message)
    print(overfit_small_subset(model, dataset).message)

Names load lazily: importing this package does not start TensorFlow.
"""

from __future__ import annotations

from kerasdiag.core.lazy import lazy_exports

# public name -> module that defines it
_LAZY = {
    "StageResult": "kerasdiag.checks.sanity.result",
    "expected_initial_loss": "kerasdiag.checks.sanity.expected",
    "check_initial_loss": "kerasdiag.checks.sanity.initial_loss",
    "check_regularization_raises_loss": "kerasdiag.checks.sanity.regularization",
    "overfit_small_subset": "kerasdiag.checks.sanity.overfit",
    "check_input_dependence": "kerasdiag.checks.sanity.baseline",
    "check_batch_independence": "kerasdiag.checks.sanity.batch_independence",
    "run_sanity_stages": "kerasdiag.checks.sanity.stages",
    "SanityCheckFailed": "kerasdiag.checks.sanity.result",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
