"""What to try: the keras-tuner oracle ``tuner.name`` names, over the space and stages the
config declares (:mod:`kerasdiag.config.search_space`).

keras-tuner's split: the oracle decides *what* to try (the staged random oracle itself is
:mod:`kerasdiag.search.coarse_to_fine`); :mod:`kerasdiag.search.tuner` decides *how* one
trial runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras_tuner

from kerasdiag.config.search_space import Param, Stage
from kerasdiag.core.errors import ConfigError
from kerasdiag.core.metrics import metric_mode
from kerasdiag.search import distributed
from kerasdiag.search.coarse_to_fine import CoarseToFineOracle
from kerasdiag.search.space import build_hyperparameters


def build_oracle(space: Sequence[Param], stages: Sequence[Stage], tuner_cfg: Any) -> Any:
    """The keras-tuner oracle ``tuner.name`` names, over ``space``, with leases on running
    trials (:class:`~kerasdiag.search.distributed.LeaseMixin`).

    - ``random`` and ``coarse_to_fine``: :class:`~kerasdiag.search.coarse_to_fine.CoarseToFineOracle`
      (random search in ``stages``; one stage for ``random``);
    - ``hyperband``: keras-tuner's ``HyperbandOracle``, ``max_epochs`` = the first stage's epochs;
    - ``bayesian``: keras-tuner's ``BayesianOptimizationOracle``, the first stage's trials.
    """
    objective = str(tuner_cfg.objective)
    common = {
        "objective": keras_tuner.Objective(objective, metric_mode(objective)),
        "lease_seconds": float(tuner_cfg.lease_seconds),
        # keras-tuner replaces seed 0 by a random one: never 0.
        "seed": int(tuner_cfg.seed) + 1,
    }
    name = str(tuner_cfg.name)
    if name in ("random", "coarse_to_fine"):
        return CoarseToFineOracle(space, stages, keep=int(tuner_cfg.keep),
                                  margin=float(tuner_cfg.margin), **common)  # fmt: skip
    fixed = {
        "hyperparameters": build_hyperparameters(space),
        "allow_new_entries": False,
        "tune_new_entries": False,
    }
    if name == "hyperband":
        return distributed.LeasedHyperbandOracle(
            max_epochs=stages[0].epochs, factor=int(tuner_cfg.factor),
            hyperband_iterations=int(tuner_cfg.hyperband_iterations), **fixed, **common,
        )  # fmt: skip
    if name == "bayesian":
        return distributed.LeasedBayesianOracle(max_trials=stages[0].trials, **fixed, **common)
    raise ConfigError("tuner.name", name, "names no search oracle")
