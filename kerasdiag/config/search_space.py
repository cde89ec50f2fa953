"""The search space declared in YAML (``tuner.space``) and its stages (``tuner.stages``):
parsed and checked with the rest of the config, before TensorFlow starts.

A space entry names the config key it sets, its type and its range::

    lr: {key: optimizer.lr, type: float, min: 1.0e-6, max: 10.0, sampling: log}
    batch_size: {key: data.batch_size, type: choice, values: [16, 32, 64, 128]}

``sampling: log`` draws ``10 ** uniform(log10 min, log10 max)``: as many trials per decade
for a learning rate of 1e-5 as for one of 1e-1. Coarse to fine narrows each range around the
best trials of a stage (:func:`narrow_space`).

Example:
    >>> from kerasdiag.config import load_config
    >>> cfg = load_config(["tuner=coarse_to_fine"])
    >>> space, stages = validate_search(cfg)
    >>> space[0]
    Param(name='lr', key='optimizer.lr', type='float', low=1e-06, high=10.0, sampling='log', values=())
    >>> [(s.trials, s.epochs) for s in stages]
    [(16, 1), (8, 5), (4, 20)]
    >>> narrow_space(space[:1], [{"lr": 1e-3}, {"lr": 1e-2}], margin=0.1)[0].high  # doctest: +ELLIPSIS
    0.050118...
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kerasdiag.config.schema import type_model_section, validator
from kerasdiag.core.errors import ConfigError

TYPES = ("float", "int", "choice")
SAMPLINGS = ("linear", "log")
ENTRY_FIELDS = ("key", "type", "min", "max", "sampling", "values")
# Sections a trial may not change: the search's own settings, what runs around a trial, and
# the data split, which must be the same for every trial so that their scores compare.
FIXED_PREFIXES = ("tuner.", "ensemble.", "sanity.", "monitors.", "recipe", "bayes_error")
FIXED_KEYS = ("trainer.epochs", "trainer.checkpoint_monitor")  # set per stage by the search
SEARCHABLE_DATA = ("data.batch_size", "data.augment.")
_ABSENT = object()


@dataclass(frozen=True)
class Param:
    """One hyperparameter: the config ``key`` it sets, its type, its range or its choices."""

    name: str
    key: str
    type: str  # float | int | choice
    low: float | None = None
    high: float | None = None
    sampling: str = "linear"  # linear | log
    values: tuple[Any, ...] = ()  # choice candidates (scalars or lists)

    @property
    def log(self) -> bool:
        return self.sampling == "log"

    def encode(self, value: Any) -> Any:
        """The value as keras-tuner holds it: choices as JSON text (lists and mixed types)."""
        return json.dumps(value) if self.type == "choice" else value

    def decode(self, value: Any) -> Any:
        """The config value for a value keras-tuner sampled."""
        if self.type == "choice":
            return json.loads(value)
        return int(round(value)) if self.type == "int" else float(value)

    def narrowed(self, kept: Sequence[Any], margin: float) -> Param:
        """The range spanned by ``kept`` values, widened by ``margin`` of this range's width.

        Log-sampled ranges are narrowed in log10 units; the result never leaves this range.
        Choices keep the candidates that ``kept`` used.
        """
        if not kept:
            return self
        if self.type == "choice":
            used = {json.dumps(v) for v in kept}
            return replace(self, values=tuple(v for v in self.values if json.dumps(v) in used))
        to_t = math.log10 if self.log else float
        lo_t, hi_t = to_t(self.low), to_t(self.high)
        pad = margin * (hi_t - lo_t)
        kept_t = [to_t(v) for v in kept]
        new_lo_t, new_hi_t = max(lo_t, min(kept_t) - pad), min(hi_t, max(kept_t) + pad)
        low, high = (10**t if self.log else t for t in (new_lo_t, new_hi_t))
        if self.type == "int":
            low, high = math.floor(low + 1e-9), math.ceil(high - 1e-9)
        return replace(self, low=max(self.low, low), high=min(self.high, high))

    def describe(self) -> str:
        if self.type == "choice":
            return f"{self.name} in {list(self.values)}"
        log = " (log)" if self.log else ""
        return f"{self.name} in [{self.low:.3g}, {self.high:.3g}]{log}"


@dataclass(frozen=True)
class Stage:
    """One stage of the search: ``trials`` trials of ``epochs`` epochs each."""

    number: int  # 1-based
    trials: int
    epochs: int


@validator
def check_search(cfg: DictConfig) -> None:
    """The space and stages of a search (``tuner.name`` other than none)."""
    if cfg.tuner.name != "none":
        validate_search(cfg)


def validate_search(cfg: DictConfig) -> tuple[list[Param], list[Stage]]:
    """The space and stages of ``cfg.tuner``; ConfigError names the bad key.

    The search's scalar settings (objective, keep, leases, ...) are checked beside their
    dataclass, :func:`kerasdiag.config.schema.check_tuner`, which calls this.
    """
    return parse_space(cfg), parse_stages(cfg.tuner)


def parse_stages(tuner_cfg: Any) -> list[Stage]:
    """The stages of ``tuner_cfg.stages``, each with at least one trial of at least one epoch."""
    stages = list(tuner_cfg.stages)
    _check(len(stages) > 0, "tuner.stages", stages, "needs at least one {trials, epochs} stage")
    for i, stage in enumerate(stages):
        for field in ("trials", "epochs"):
            value = stage[field]
            _check(value >= 1, f"tuner.stages.{i}.{field}", value, "must be >= 1")
    return [Stage(i + 1, int(s.trials), int(s.epochs)) for i, s in enumerate(stages)]


def parse_space(cfg: DictConfig) -> list[Param]:
    """The entries of ``cfg.tuner.space`` as :class:`Param` objects, each checked against cfg.

    Raises ConfigError (naming ``tuner.space.<name>.<field>``) for an unknown config key, a
    key the search may not vary, an unknown type, an empty or reversed range, log sampling
    with a bound <= 0, or a value the config key cannot hold.
    """
    space = cfg.tuner.space
    _check(len(space) > 0, "tuner.space", {}, "needs at least one hyperparameter")
    return [_parse_entry(cfg, str(name), entry) for name, entry in space.items()]


def _parse_entry(cfg: DictConfig, name: str, entry: Any) -> Param:
    where = f"tuner.space.{name}"
    _check(isinstance(entry, (DictConfig, Mapping)), where, entry,
           "must be a mapping {key, type, min, max, sampling} or {key, type: choice, values}")  # fmt: skip
    entry = OmegaConf.to_container(entry) if isinstance(entry, DictConfig) else dict(entry)
    unknown = sorted(set(entry) - set(ENTRY_FIELDS))
    _check(not unknown, where, unknown, f"unknown field(s); allowed: {', '.join(ENTRY_FIELDS)}")
    key = entry.get("key")
    _check(isinstance(key, str) and key not in ("", "???"), f"{where}.key", key,
           "required: the dotted config key the value sets, e.g. optimizer.lr")  # fmt: skip
    _check_key(cfg, f"{where}.key", key)
    kind = entry.get("type", "float")
    _check(kind in TYPES, f"{where}.type", kind, f"must be one of {', '.join(TYPES)}")
    sampling = entry.get("sampling", "linear")
    _check(sampling in SAMPLINGS, f"{where}.sampling", sampling,
           f"must be one of {', '.join(SAMPLINGS)}")  # fmt: skip
    if kind == "choice":
        param = _parse_choice(where, name, key, entry, sampling)
        candidates = list(param.values)
    else:
        param = _parse_range(where, name, key, kind, entry, sampling)
        candidates = [param.low, param.high]
    for value in candidates:
        _check_settable(cfg, where, key, value)
    return param


def _parse_range(where: str, name: str, key: str, kind: str, entry: dict, sampling: str) -> Param:
    _check(entry.get("values") is None, f"{where}.values", entry.get("values"),
           f"only for type: choice (type is {kind})")  # fmt: skip
    bounds = {}
    for field in ("min", "max"):
        value = entry.get(field)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (kind == "float" or float(value).is_integer())
        _check(ok, f"{where}.{field}", value, f"required: a finite {kind} bound")
        bounds[field] = int(value) if kind == "int" else float(value)
    low, high = bounds["min"], bounds["max"]
    _check(low < high, f"{where}.max", high, f"must be above min ({low})")
    if sampling == "log":
        _check(low > 0, f"{where}.min", low, "must be > 0 with sampling: log")
    return Param(name, key, kind, low, high, sampling)


def _parse_choice(where: str, name: str, key: str, entry: dict, sampling: str) -> Param:
    for field in ("min", "max"):
        _check(entry.get(field) is None, f"{where}.{field}", entry.get(field),
               "a choice has values, not a range")  # fmt: skip
    _check(sampling == "linear", f"{where}.sampling", sampling, "applies to float and int only")
    values = entry.get("values")
    _check(isinstance(values, list) and len(values) > 0, f"{where}.values", values,
           "required: a non-empty list of candidates")  # fmt: skip
    encoded = [json.dumps(v) for v in values]
    _check(len(set(encoded)) == len(encoded), f"{where}.values", values, "has duplicates")
    return Param(name, key, "choice", values=tuple(values))


def _check_key(cfg: DictConfig, where: str, key: str) -> None:
    fixed = key.startswith(FIXED_PREFIXES) or key in FIXED_KEYS
    _check(not fixed, where, key, "is set by the search itself, not searchable")
    if key.startswith("data."):
        _check(key == SEARCHABLE_DATA[0] or key.startswith(SEARCHABLE_DATA[1]), where, key,
               "every trial uses the same data split; of data.* only batch_size and "
               "augment.* can be searched")  # fmt: skip
    node = OmegaConf.select(cfg, key, default=_ABSENT)
    _check(node is not _ABSENT, where, key, "no such config key")
    _check(not isinstance(node, DictConfig), where, key, "names a section, not a value")


def _check_settable(cfg: DictConfig, where: str, key: str, value: Any) -> None:
    """The value fits the key's declared type (an int for model.kernel_size, a list, ...)."""
    got = OmegaConf.select(with_values(cfg, {key: value}, where=where), key)
    if isinstance(got, ListConfig):
        got = OmegaConf.to_container(got)
    _check(got == value, where, value, f"cannot be stored in {key} (it holds {got!r})")


def narrow_space(
    space: Sequence[Param],
    best: Sequence[Mapping[str, Any]],
    margin: float = 0.1,
) -> list[Param]:
    """Coarse to fine: each range narrowed around the values of the ``best`` trials.

    ``best`` holds the decoded values of the trials to keep (best first). A numeric range
    becomes [min, max] of their values, widened by ``margin`` times the old width on each side
    (log10 units for log-sampled entries) and clipped to the old range; a choice keeps the
    candidates they used. With no trials to keep, the space is unchanged.
    """
    return [p.narrowed([b[p.name] for b in best if p.name in b], margin) for p in space]


def trial_budget(values: Mapping[str, Any], stages: Sequence[Stage]) -> tuple[int, int]:
    """(stage number, epochs) of a trial from its keras-tuner values: the coarse-to-fine
    oracle's ``tuner/stage`` and ``tuner/epochs``, Hyperband's round and ``tuner/epochs``,
    else the first stage."""
    stage = values.get("tuner/stage", values.get("tuner/round", 0) + 1)
    return int(stage), int(values.get("tuner/epochs", stages[0].epochs))


def _check(ok: bool, key: str, value: Any, requirement: str) -> None:
    if not ok:
        raise ConfigError(key, value, requirement)


def with_values(
    cfg: DictConfig, values: Mapping[str, Any], where: str = "tuner.space"
) -> DictConfig:
    """A copy of ``cfg`` with each ``key: value`` of ``values`` set (types checked by the
    schema, the rest of the config not validated)."""
    out = copy.deepcopy(cfg)  # keeps the schema's node types: an int field refuses 2.5
    OmegaConf.set_readonly(out, False)
    for key, value in values.items():
        try:
            OmegaConf.update(out, key, value, merge=False)
            if key.startswith("model."):  # an open section: the schema types it on demand
                type_model_section(out)
        except (OmegaConfBaseException, ValueError, ConfigError) as exc:
            reason = str(exc).splitlines()[0]
            raise ConfigError(where, value, f"cannot be stored in {key}: {reason}") from None
    return out
