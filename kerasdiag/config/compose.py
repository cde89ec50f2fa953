"""Compose configs from ``conf/`` (as ``scripts/train.py`` does) and validate their values."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from kerasdiag.config.schema import Config
from kerasdiag.errors import ConfigError

# The repository's conf/ (the package is installed in editable mode); KERASDIAG_CONF overrides.
CONF_DIR = Path(os.environ.get("KERASDIAG_CONF", Path(__file__).resolve().parents[2] / "conf"))
SCHEMA_NAME = "kerasdiag_schema"

DATASETS = {"digits", "cifar10", "npz"}
LOSSES = {"softmax", "multiclass_hinge", "focal"}
OPTIMIZERS = {"sgd", "adagrad", "rmsprop", "adam", "adamw"}
SCHEDULES = {"constant", "step", "exponential", "inverse_time", "plateau", "cosine"}
STRATEGIES = {"none", "auto", "mirrored", "multiworker"}
ACTIVATIONS = {
    "relu", "elu", "selu", "gelu", "leaky_relu", "relu6", "silu", "swish",
    "tanh", "sigmoid", "linear",
}  # fmt: skip
_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")


def register_schema() -> None:
    """Make the structured schema available to Hydra as ``kerasdiag_schema``."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=Config)


def load_config(overrides: Sequence[str] = (), validate: bool = True) -> DictConfig:
    """Compose ``conf/config.yaml`` with command-line style ``overrides`` and validate it.

    The same composition ``scripts/train.py`` does, for tests, notebooks and search trials.

    Example:
        >>> cfg = load_config(["recipe=cifar_softmax", "optimizer=nesterov", "optimizer.lr=0.01"])
        >>> cfg.optimizer.nesterov, cfg.optimizer.lr
        (True, 0.01)
    """
    register_schema()
    overrides = list(overrides)
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: same search path
        cfg = compose(config_name="config", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
    if validate:
        validate_config(cfg)
    return cfg


def _require(ok: bool, key: str, value: Any, requirement: str) -> None:
    if not ok:
        raise ConfigError(key, value, requirement)


def _positive(cfg: Any, key: str, *, strict: bool = True, optional: bool = False) -> None:
    value = _get(cfg, key)
    if optional and value is None:
        return
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value > 0 if strict else value >= 0)
    _require(ok, key, value, "must be > 0" if strict else "must be >= 0")


def _fraction(cfg: Any, key: str, *, open_low: bool = True, open_high: bool = True) -> None:
    value = _get(cfg, key)
    low_ok = value > 0 if open_low else value >= 0
    high_ok = value < 1 if open_high else value <= 1
    interval = f"{'(' if open_low else '['}0, 1{')' if open_high else ']'}"
    _require(math.isfinite(value) and low_ok and high_ok, key, value, f"must be in {interval}")


def _one_of(cfg: Any, key: str, allowed: set[str]) -> None:
    value = _get(cfg, key)
    _require(value in allowed, key, value, f"must be one of {', '.join(sorted(allowed))}")


def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def validate_config(cfg: DictConfig) -> None:
    """Check value ranges the schema's types cannot express; raise ConfigError on the first."""
    _one_of(cfg, "data.name", DATASETS)
    _fraction(cfg, "data.val_fraction")
    _positive(cfg, "data.limit", optional=True)
    if cfg.data.imbalance is not None:
        _fraction(cfg, "data.imbalance", open_high=False)
    _positive(cfg, "data.batch_size")
    _positive(cfg, "data.shuffle_buffer")
    _positive(cfg, "data.augment.crop", strict=False)
    _positive(cfg, "data.augment.noise", strict=False)
    if cfg.data.path is not None:
        path = Path(str(cfg.data.path)).expanduser()
        kind = "file" if cfg.data.name == "npz" else "directory"
        exists = path.is_file() if kind == "file" else path.is_dir()
        _require(exists, "data.path", cfg.data.path, f"no such {kind}")
    elif cfg.data.name == "npz":
        _require(False, "data.path", None, "data.name=npz needs the path of an .npz file")

    _require(bool(_DOTTED.match(cfg.model.builder)), "model.builder", cfg.model.builder,
             "must be a dotted path such as recipes.models.convnet")  # fmt: skip
    _one_of(cfg, "model.activation", ACTIVATIONS)
    for key in ("hidden_units", "conv_filters", "dense_units"):
        values = list(cfg.model[key])
        _require(all(v > 0 for v in values), f"model.{key}", values, "every entry must be > 0")
    _positive(cfg, "model.kernel_size")
    rates = list(cfg.model.dropout)
    _require(all(0 <= r < 1 for r in rates), "model.dropout", rates, "rates must be in [0, 1)")
    _positive(cfg, "model.l2", strict=False)
    _positive(cfg, "model.l1", strict=False)

    _one_of(cfg, "loss.name", LOSSES)
    _positive(cfg, "loss.margin")
    _positive(cfg, "loss.gamma", strict=False)
    if cfg.loss.alpha is not None:
        _fraction(cfg, "loss.alpha", open_high=False)

    opt = cfg.optimizer
    _one_of(cfg, "optimizer.name", OPTIMIZERS)
    _positive(cfg, "optimizer.lr")
    _fraction(cfg, "optimizer.momentum", open_low=False)
    for key in ("rho", "beta_1", "beta_2", "ema_momentum"):
        _fraction(cfg, f"optimizer.{key}", open_low=False)
    _positive(cfg, "optimizer.epsilon")
    _positive(cfg, "optimizer.initial_accumulator_value", strict=False)
    _positive(cfg, "optimizer.weight_decay", strict=False, optional=True)
    for key in ("clipnorm", "clipvalue", "global_clipnorm"):
        _positive(cfg, f"optimizer.{key}", optional=True)
    _require(opt.clipnorm is None or opt.global_clipnorm is None, "optimizer.global_clipnorm",
             opt.global_clipnorm, "clip by clipnorm or by global_clipnorm, not both")  # fmt: skip
    _require(not opt.nesterov or opt.momentum > 0, "optimizer.nesterov", opt.nesterov,
             "Nesterov momentum needs optimizer.momentum > 0")  # fmt: skip

    _one_of(cfg, "schedule.name", SCHEDULES)
    _positive(cfg, "schedule.drop_every")
    _fraction(cfg, "schedule.factor")
    _positive(cfg, "schedule.decay_rate", strict=False, optional=True)
    _positive(cfg, "schedule.warmup_epochs", strict=False)
    _positive(cfg, "schedule.min_lr", strict=False)
    _require(cfg.schedule.min_lr < opt.lr, "schedule.min_lr", cfg.schedule.min_lr,
             "must be below optimizer.lr")  # fmt: skip
    _positive(cfg, "schedule.patience", strict=False)

    _positive(cfg, "trainer.epochs")
    _require(cfg.schedule.warmup_epochs < cfg.trainer.epochs, "schedule.warmup_epochs",
             cfg.schedule.warmup_epochs, "must be fewer than trainer.epochs")  # fmt: skip
    _one_of(cfg, "trainer.strategy", STRATEGIES)
    _require(cfg.trainer.verbose in (0, 1, 2), "trainer.verbose", cfg.trainer.verbose,
             "must be 0, 1 or 2")  # fmt: skip
    _positive(cfg, "trainer.early_stopping.patience", strict=False)
    if cfg.bayes_error is not None:
        _fraction(cfg, "bayes_error", open_low=False)


def config_error_line(exc: BaseException) -> str:
    """One line from a Hydra/OmegaConf composition error, naming the key where it can."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    full_key = next(
        (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), None
    )
    head = lines[0] if lines else type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        cause_lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
        full_key = full_key or next(
            (ln.split(":", 1)[1].strip() for ln in cause_lines if ln.startswith("full_key:")), None
        )
        if cause_lines and cause_lines[0] not in head:
            head = f"{head} {cause_lines[0]}"
    if "Available options" in text:
        options = text.split("Available options", 1)[1].splitlines()[1:]
        names = [o.strip() for o in options if o.startswith("\t") or o.startswith("  ")]
        names = [n for n in names if n and " " not in n]
        if names:
            head = f"{head} (available: {', '.join(names)})"
    if full_key and full_key not in head:
        head = f"{head} (key: {full_key})"
    return f"invalid config: {head}"
