"""Checks of the ``ensemble`` config section that its types cannot express (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasdiag.errors import ConfigError

ENSEMBLES = ("none", "seeds", "topk", "checkpoints", "ema")


def validate_ensemble_config(cfg: Any) -> None:
    """Raise ConfigError on the first bad ``ensemble`` value of a composed config.

    Example:
        >>> from kerasdiag.config import load_config
        >>> validate_ensemble_config(load_config(["ensemble=seeds", "ensemble.members=1"]))
        Traceback (most recent call last):
        ...
        kerasdiag.errors.ConfigError: invalid config: ensemble.members=1: seeds needs at least 2 members
    """
    ens = cfg.ensemble
    if ens.name not in ENSEMBLES:
        raise ConfigError("ensemble.name", ens.name, f"must be one of {', '.join(ENSEMBLES)}")
    if ens.name == "none":
        return
    if cfg.tuner.name != "none":
        raise ConfigError(
            "ensemble.name", ens.name,
            "cannot run with a search (tuner); run the search first, then "
            "ensemble=topk ensemble.source=<the search's run directory>",
        )  # fmt: skip
    # The EMA ensemble gets two members (best checkpoint + moving average) per training.
    least = 1 if ens.name == "ema" else 2
    if not isinstance(ens.members, int) or ens.members < least:
        raise ConfigError(
            "ensemble.members", ens.members, f"{ens.name} needs at least {least} members"
        )
    if ens.name == "checkpoints" and ens.members > cfg.trainer.epochs:
        raise ConfigError(
            "ensemble.members", ens.members,
            f"exceeds trainer.epochs={cfg.trainer.epochs}: one checkpoint per epoch",
        )  # fmt: skip
    if ens.name == "topk":
        if ens.source is None or not str(ens.source).strip():
            raise ConfigError(
                "ensemble.source", ens.source, "topk needs the search's run directory"
            )
        if not Path(str(ens.source)).expanduser().is_dir():
            raise ConfigError("ensemble.source", ens.source, "no such directory")
