"""Gradient checking for Keras models, layers and losses.

- ``check_gradients``: sampled centered differences on a float64 copy, per variable,
  data loss and regularization apart, kinks labelled, step sizes retried.
- ``check_gradients_fast``: directional derivatives along a few random directions over
  all parameters at once; names the variables to sample when it fails.
- ``check_layer_gradients``: one layer or op against its full Jacobian
  (``tf.test.compute_gradient``), inputs and weights.
- ``gradcheck_stage``: the check as the first pre-training stage of a run.

Example:
    >>> import keras, numpy as np
    >>> from kerasdiag.checks.gradcheck import check_gradients
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile(loss="sparse_categorical_crossentropy")
    >>> check_gradients(model, np.ones((2, 4), "float32"), np.array([0, 1])).passed
    True
"""

from kerasdiag.checks.gradcheck.check import check_gradients
from kerasdiag.checks.gradcheck.fast import check_gradients_fast
from kerasdiag.checks.gradcheck.layer import check_layer_gradients
from kerasdiag.checks.gradcheck.report import GradcheckReport
from kerasdiag.checks.gradcheck.stage import gradcheck_stage

__all__ = [
    "GradcheckReport",
    "check_gradients",
    "check_gradients_fast",
    "check_layer_gradients",
    "gradcheck_stage",
]
