"""What keras-tuner sees of a search space, and a trial's values put into a run's config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras_tuner
from omegaconf import DictConfig

from kerasdiag.config import validate_config
from kerasdiag.config.search_space import Param, with_values


def build_hyperparameters(space: Sequence[Param]) -> Any:
    """The keras-tuner ``HyperParameters`` of a space."""
    hp = keras_tuner.HyperParameters()
    for p in space:
        if p.type == "choice":
            hp.Choice(p.name, [p.encode(v) for v in p.values], ordered=False)
        elif p.type == "int":
            hp.Int(p.name, int(p.low), int(p.high), sampling=p.sampling)
        else:
            hp.Float(p.name, p.low, p.high, sampling=p.sampling)
    return hp


def set_values(
    cfg: DictConfig, values: Mapping[str, Any], check: bool = True, where: str = "tuner.space"
) -> DictConfig:
    """A copy of ``cfg`` with each ``key: value`` of ``values`` set (types checked by the schema).

    With ``check`` the result is validated like any config (a sampled value can still make the
    config invalid, e.g. an lr below ``schedule.min_lr``).
    """
    out = with_values(cfg, values, where)
    if check:
        validate_config(out)
    return out
