"""What kind of unit each activation makes: the one list the config, the builders, the
monitors and the checks read.

Example:
    >>> "gelu" in RELU_LIKE, init_gain("tanh")
    (True, 1.0)
"""

from __future__ import annotations

# Units that halve the variance they pass on (about half their inputs map to ~0): they want
# He's initialisation, variance 2/n_in. Every other activation gets Glorot/LeCun's 1/n_in.
RELU_LIKE = frozenset(
    {"relu", "relu6", "elu", "selu", "gelu", "leaky_relu", "silu", "swish", "mish"}
)
# Units whose output is exactly 0 over half their input range: a unit at 0 on every example
# is dead (no gradient reaches its weights).
ZERO_FLOORED = ("relu", "relu6")
# Units that saturate at both ends (their gradient vanishes there).
SATURATING = ("tanh", "sigmoid")
# Output activations whose values are already probabilities.
PROBABILITY = ("sigmoid", "softmax")
# What ``model.activation`` may name for the recipes' builders.
RECIPE_ACTIVATIONS = RELU_LIKE | {"tanh", "sigmoid", "linear"}


def init_gain(activation: str) -> float:
    """The variance gain of the initialisation ``activation`` wants: 2 for ReLU-like units
    (He), 1 otherwise (Glorot/LeCun)."""
    return 2.0 if activation in RELU_LIKE else 1.0
