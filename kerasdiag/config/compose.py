"""Compose configs from ``conf/`` (as ``scripts/train.py`` does) and validate their values."""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kerasdiag.config import search_space  # noqa: F401 - registers the search's validator
from kerasdiag.config.schema import VALIDATORS, Config
from kerasdiag.core.errors import ConfigError

# The repository's conf/ (the package is installed in editable mode); KERASDIAG_CONF overrides.
CONF_DIR = Path(os.environ.get("KERASDIAG_CONF", Path(__file__).resolve().parents[2] / "conf"))
SCHEMA_NAME = "kerasdiag_schema"


def register_schema() -> None:
    """Make the structured schema available to Hydra as ``kerasdiag_schema``."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=Config)


def load_config(overrides: Sequence[str] = (), validate: bool = True) -> DictConfig:
    """Compose ``conf/config.yaml`` with command-line style ``overrides`` and validate it.

    The same composition ``scripts/train.py`` does, for tests, notebooks and search trials.
    Any problem with the overrides (unknown group option or key, a value of the wrong type,
    bad override syntax) is raised as a one-line :class:`ConfigError` naming the override.

    Example:
        >>> cfg = load_config(["recipe=cifar_softmax", "optimizer=nesterov", "optimizer.lr=0.01"])
        >>> cfg.optimizer.nesterov, cfg.optimizer.lr
        (True, 0.01)
    """
    register_schema()
    overrides = [str(o) for o in overrides]
    try:
        cfg = _compose(overrides)
    except Exception as exc:  # Hydra's and OmegaConf's many composition errors
        raise composition_error(exc, overrides) from None
    if validate:
        validate_config(cfg)
    return cfg


def _compose(overrides: list[str]) -> DictConfig:
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: same search path
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides)


def composition_error(exc: BaseException, overrides: Sequence[str] = ()) -> ConfigError:
    """A one-line ConfigError from a Hydra/OmegaConf composition error, made from its fields.

    Hydra's exceptions carry the override (``OverrideParseException.override``), the missing
    option (``MissingConfigException.missing_cfg_file`` and ``.options``); OmegaConf's, raised
    as their cause, the full key and the value (``full_key``, ``value``, ``msg``). A key the
    schema lacks has no value there: the one typed is taken from ``overrides`` (the command
    line's), and the schema's closest key is offered.
    """
    if isinstance(exc, ConfigError):
        return exc
    if isinstance(exc, OverrideParseException):
        key, _, value = exc.override.partition("=")
        return ConfigError(_one_line(key.lstrip("+~")) or "overrides", value,
                           _one_line(exc.message))  # fmt: skip
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, option = str(exc.missing_cfg_file).rpartition("/")
        where = f"no such option {exc.missing_cfg_file}"
        if exc.options:
            where += f" (available: {', '.join(sorted(exc.options))})"
        return ConfigError(group or "config", option, where)
    cause = exc if isinstance(exc, OmegaConfBaseException) else exc.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        # msg is OmegaConf's own sentence, before the lines that repeat full_key and the types
        reason = (getattr(cause, "msg", None) or str(cause)).strip().splitlines()[0]
        key, value = str(cause.full_key), getattr(cause, "value", None)
        if value is None:
            value = typed_value(key, overrides)
        if "not in" in reason:  # OmegaConf's "Key 'x' not in 'Section'" / "is not in struct"
            reason += close_key_hint(key)
        return ConfigError(key, value, _one_line(reason))
    # Errors without fields (an interpolation Hydra cannot resolve, ...): Hydra's first line.
    return ConfigError("overrides", None, _one_line(str(exc)) or type(exc).__name__)


def typed_value(key: str, overrides: Sequence[str]) -> str | None:
    """The value ``overrides`` (``key=value`` strings, ``+`` or ``~`` allowed) gave ``key``."""
    for override in overrides:
        name, sep, value = str(override).partition("=")
        if sep and name.lstrip("+~") == key:
            return value
    return None


def close_key_hint(key: str) -> str:
    """``" (did you mean trainer.epochs?)"``: the schema's closest key in the same section,
    or "" when none is close."""
    section, _, leaf = key.rpartition(".")
    node = OmegaConf.select(_schema(), section) if section else _schema()
    if not isinstance(node, DictConfig):
        return ""
    match = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=1, cutoff=0.6)
    return f" (did you mean {section + '.' if section else ''}{match[0]}?)" if match else ""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def validate_config(cfg: DictConfig) -> None:
    """Check what the schema's types cannot express; raise ConfigError on the first problem.

    Runs every interpolation, refuses keys the schema lacks (``+key=value`` can add them),
    then the validator beside each dataclass of :mod:`kerasdiag.config.schema`.
    """
    _check_resolvable(cfg)
    for key in _unknown_keys(cfg, _schema()):
        raise ConfigError(
            key,
            OmegaConf.select(cfg, key),
            "unknown key (not in the config schema)" + close_key_hint(key),
        )
    for check in VALIDATORS:
        check(cfg)


def _check_resolvable(cfg: DictConfig) -> None:
    """Every ``${...}`` interpolation resolves to a value its key's type accepts."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        raw: Any = OmegaConf.to_container(cfg, resolve=False)
        for part in key.split("."):
            raw = raw.get(part) if isinstance(raw, dict) else None
        reason = " ".join(str(exc).splitlines()[0].split())
        raise ConfigError(key, raw, f"cannot be resolved: {reason}") from None


@functools.cache
def _schema() -> DictConfig:
    # Building the structured config takes ~10 ms: once per process is enough.
    schema = OmegaConf.structured(Config)
    OmegaConf.set_readonly(schema, True)
    return schema


def typed(container: Any) -> DictConfig:
    """A plain config (a saved ``config.yaml``) merged into the schema: typed, writable."""
    cfg = OmegaConf.merge(_schema(), container)
    OmegaConf.set_readonly(cfg, False)
    return cfg


def _unknown_keys(node: Any, schema: Any, prefix: str = "") -> Iterator[str]:
    """Keys of ``node`` the structured schema lacks (``+key=value`` can add them)."""
    for key in node:
        path = f"{prefix}{key}"
        if key not in schema:
            yield path
            continue
        child, child_schema = node[key], schema[key]
        if isinstance(child, DictConfig) and is_dataclass(OmegaConf.get_type(child_schema)):
            yield from _unknown_keys(child, child_schema, f"{path}.")
