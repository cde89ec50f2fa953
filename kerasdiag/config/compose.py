"""Compose configs from ``conf/`` (as ``scripts/train.py`` does) and validate their values."""

from __future__ import annotations

import ast
import functools
import importlib.util
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from kerasdiag.config.schema import Config, ModelConfig
from kerasdiag.errors import ConfigError

# The repository's conf/ (the package is installed in editable mode); KERASDIAG_CONF overrides.
CONF_DIR = Path(os.environ.get("KERASDIAG_CONF", Path(__file__).resolve().parents[2] / "conf"))
SCHEMA_NAME = "kerasdiag_schema"

DATASETS = {"digits", "cifar10", "npz", "image_folder", "csv"}
LOSSES = {"softmax", "multiclass_hinge", "focal", "binary"}
OPTIMIZERS = {"sgd", "adagrad", "rmsprop", "adam", "adamw"}
SCHEDULES = {"constant", "step", "exponential", "inverse_time", "plateau", "cosine"}
STRATEGIES = {"none", "auto", "mirrored", "multiworker"}
ACTIVATIONS = {
    "relu", "elu", "selu", "gelu", "leaky_relu", "relu6", "silu", "swish",
    "tanh", "sigmoid", "linear",
}  # fmt: skip
_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")
METRICS = {"loss", "accuracy", "val_loss", "val_accuracy"}  # what build_model compiles
MAX_INT = 2**31 - 1  # sizes and counts beyond this overflow TensorFlow's int32 shapes
MAX_SEED = 2**32 - 1  # NumPy's legacy seeding (keras.utils.set_random_seed) takes uint32


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


def composition_error(exc: BaseException, overrides: Sequence[str]) -> ConfigError:
    """A ConfigError naming the override that made composition fail, with Hydra's reason."""
    reason = config_error_line(exc).removeprefix("invalid config: ")
    culprit = _find_culprit(str(exc) + " " + str(exc.__cause__ or ""), overrides)
    if culprit is None:
        return ConfigError("overrides", list(overrides), reason)
    key, _, value = culprit.partition("=")
    reason = reason.replace(f"Error merging override {culprit}", "").strip() or reason
    key = " ".join(key.lstrip("+~").split())  # one line, whatever was typed
    return ConfigError(key or "overrides", value, " ".join(reason.split()))


def _find_culprit(text: str, overrides: Sequence[str]) -> str | None:
    user = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    named = [o for o in user if o in text]  # "Error merging override data.batch_size=abc"
    if not named:  # "Key 'foo' not in 'Config'", "Could not find 'recipe/nope'"
        keys = {o: o.split("=", 1)[0].lstrip("+~") for o in user}
        named = [o for o, k in keys.items() if k and re.search(rf"'{re.escape(k)}[/']", text)]
    if named:
        return max(named, key=len)
    if len(user) == 1:
        return user[0]
    for override in user:  # syntax errors name no override: find the one that fails alone
        try:
            _compose([override])
        except Exception:
            return override
    return None


FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max


def _require(ok: bool, key: str, value: Any, requirement: str) -> None:
    if not ok:
        raise ConfigError(key, value, requirement)


def _finite(value: Any) -> bool:
    # math.isfinite overflows on huge Python ints; ints are always finite.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _positive(cfg: Any, key: str, *, strict: bool = True, optional: bool = False) -> None:
    value = _get(cfg, key)
    if optional and value is None:
        return
    ok = _finite(value) and (value > 0 if strict else value >= 0)
    _require(ok, key, value, "must be > 0" if strict else "must be >= 0")
    if isinstance(value, int):
        _require(value <= MAX_INT, key, value, f"must be at most {MAX_INT}")


def _fraction(cfg: Any, key: str, *, open_low: bool = True, open_high: bool = True) -> None:
    value = _get(cfg, key)
    if not _finite(value):
        _require(False, key, value, "must be a finite number")
    low_ok = value > 0 if open_low else value >= 0
    high_ok = value < 1 if open_high else value <= 1
    interval = f"{'(' if open_low else '['}0, 1{')' if open_high else ']'}"
    _require(_finite(value) and low_ok and high_ok, key, value, f"must be in {interval}")


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
    _check_resolvable(cfg)
    for key in _unknown_keys(cfg, _schema()):
        _require(False, key, OmegaConf.select(cfg, key), "unknown key (not in the config schema)")
    _one_of(cfg, "data.name", DATASETS)
    _fraction(cfg, "data.val_fraction")
    _positive(cfg, "data.limit", optional=True)
    if cfg.data.imbalance is not None:
        _fraction(cfg, "data.imbalance", open_high=False)
    _positive(cfg, "data.batch_size")
    _positive(cfg, "data.shuffle_buffer")
    _positive(cfg, "data.augment.crop", strict=False)
    _positive(cfg, "data.augment.noise", strict=False)
    _fraction(cfg, "data.test_fraction")
    size = list(cfg.data.image_size)
    _require(len(size) == 2 and all(0 < v <= 65536 for v in size), "data.image_size", size,
             "must be [height, width], each > 0")  # fmt: skip
    _one_of(cfg, "data.color_mode", {"rgb", "grayscale", "rgba"})
    if cfg.data.path is not None:
        path = Path(str(cfg.data.path)).expanduser()
        kind = "file" if cfg.data.name in ("npz", "csv") else "directory"
        exists = path.is_file() if kind == "file" else path.is_dir()
        _require(exists, "data.path", cfg.data.path, f"no such {kind}")
    elif cfg.data.name in ("npz", "csv", "image_folder"):
        what = {"npz": "an .npz file", "csv": "a CSV file"}.get(cfg.data.name, "a folder")
        _require(False, "data.path", None, f"data.name={cfg.data.name} needs the path of {what}")

    _type_model_section(cfg)
    for key in ("builder", "_target_") if cfg.model._target_ else ("builder",):
        path = cfg.model[key]
        _require(isinstance(path, str) and bool(_DOTTED.match(path)), f"model.{key}", path,
                 "must be a dotted path such as recipes.models.convnet")  # fmt: skip
        # The builder is imported and called: never a function of the standard library.
        _require(path.split(".")[0] not in sys.stdlib_module_names, f"model.{key}", path,
                 "must name a model builder, not a standard-library function")  # fmt: skip
        check_builder(path, f"model.{key}")
    _one_of(cfg, "model.activation", ACTIVATIONS)
    for key in ("hidden_units", "conv_filters", "dense_units"):
        values = list(cfg.model[key])
        _require(all(0 < v <= MAX_INT for v in values), f"model.{key}", values,
                 "every entry must be > 0")  # fmt: skip
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
    auto_lr = opt.lr == "auto"  # the learning-rate range test picks it (kerasdiag.lr_finder)
    if auto_lr:
        _require(cfg.tuner.name == "none", "optimizer.lr", "auto",
                 "a search samples the learning rate itself: give a number")  # fmt: skip
    else:
        _require(_finite(opt.lr), "optimizer.lr", opt.lr, "must be a number > 0 or auto")
        _positive(cfg, "optimizer.lr")
        # Keras keeps the rate as float32: a larger value becomes inf and the first step NaN.
        _require(float(opt.lr) <= FLOAT32_MAX, "optimizer.lr", opt.lr,
                 f"must be finite in float32 (at most {FLOAT32_MAX:.4g})")  # fmt: skip
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
    _require(auto_lr or cfg.schedule.min_lr < opt.lr, "schedule.min_lr", cfg.schedule.min_lr,
             "must be below optimizer.lr")  # fmt: skip
    _positive(cfg, "schedule.patience", strict=False)

    _positive(cfg, "trainer.epochs")
    _require(cfg.schedule.warmup_epochs < cfg.trainer.epochs, "schedule.warmup_epochs",
             cfg.schedule.warmup_epochs, "must be fewer than trainer.epochs")  # fmt: skip
    _one_of(cfg, "trainer.strategy", STRATEGIES)
    _require(cfg.trainer.verbose in (0, 1, 2), "trainer.verbose", cfg.trainer.verbose,
             "must be 0, 1 or 2")  # fmt: skip
    _positive(cfg, "trainer.early_stopping.patience", strict=False)
    for key in ("trainer.checkpoint_monitor", "trainer.early_stopping.monitor", "schedule.monitor"):
        _one_of(cfg, key, METRICS)
    es = cfg.trainer.early_stopping
    _require(not es.enabled or es.monitor == cfg.trainer.checkpoint_monitor,
             "trainer.early_stopping.monitor", es.monitor,
             f"must equal trainer.checkpoint_monitor ({cfg.trainer.checkpoint_monitor}): one "
             "metric chooses the best epoch, the checkpoint kept and the model tested")  # fmt: skip
    for key in ("trainer.seed", "data.seed"):
        value = _get(cfg, key)
        _require(0 <= value <= MAX_SEED, key, value, f"must be in [0, {MAX_SEED}]")
    if cfg.bayes_error is not None:
        _fraction(cfg, "bayes_error", open_low=False)
    _validate_counts(cfg)
    _validate_areas(cfg)


def _type_model_section(cfg: DictConfig) -> None:
    """The model section is open (a ``_target_`` builder's own arguments); its schema keys are
    typed here as the structured schema types the others, and written back converted."""
    model = cfg.model
    extra = [k for k in model if k not in _model_schema()]
    if extra and not model.get("_target_"):
        _require(False, f"model.{extra[0]}", model[extra[0]],
                 "unknown key (not in the config schema; a builder's own arguments need model._target_)")  # fmt: skip
    for key in _model_schema():
        try:
            typed = OmegaConf.merge(_model_schema(), {key: model[key]})[key]
        except OmegaConfBaseException as exc:
            reason = " ".join(str(exc).splitlines()[0].split())
            raise ConfigError(f"model.{key}", model[key], reason) from None
        with open_dict(model):
            model[key] = typed


@functools.cache
def _model_schema() -> DictConfig:
    return OmegaConf.structured(ModelConfig)


def check_builder(path: str, key: str = "model.builder") -> None:
    """The module ``model.builder`` names exists, its imports are installed and it defines
    the function: found without importing it (its ``import keras`` would start TensorFlow).

    What this cannot see (an import inside a function, a failing submodule) is reported with
    its real exception when the pipeline imports the builder.
    """
    module_name, _, func_name = path.rpartition(".")
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:  # a parent package fails to import
        raise ConfigError(key, path, _import_failure(module_name, exc)) from None
    if spec is None:
        raise ConfigError(key, path, f"no module named {module_name!r}")
    if not spec.origin or not spec.origin.endswith(".py") or not Path(spec.origin).is_file():
        return  # compiled or namespace modules: the import itself will tell
    missing, defined = _module_imports_and_names(spec.origin)
    for name in missing:
        exc = ModuleNotFoundError(f"No module named {name!r}")
        raise ConfigError(key, path, _import_failure(module_name, exc))
    if defined is not None and func_name not in defined:
        raise ConfigError(key, path, f"module {module_name!r} defines no {func_name!r}")


def _import_failure(module_name: str, exc: BaseException) -> str:
    return f"module {module_name!r} cannot be imported: {type(exc).__name__}: {exc}"


@functools.cache
def _module_imports_and_names(filename: str) -> tuple[list[str], set[str] | None]:
    """(top-level absolute imports that are not installed, names the module defines)."""
    try:
        tree = ast.parse(Path(filename).read_text(encoding="utf-8"), filename)
    except (OSError, SyntaxError, ValueError):
        return [], None  # the import reports it
    missing, names, star = [], set(), False
    for node in tree.body:
        if isinstance(node, ast.Import):
            roots = [a.name.split(".")[0] for a in node.names]
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots = [node.module.split(".")[0]] if node.module and node.level == 0 else []
            names.update(a.asname or a.name for a in node.names)
            star = star or any(a.name == "*" for a in node.names)
        else:
            roots = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(t.id for t in targets if isinstance(t, ast.Name))
            elif not isinstance(node, ast.Expr):  # if/try blocks may define names
                star = True
        for root in roots:
            if root != "__future__" and importlib.util.find_spec(root) is None:
                missing.append(root)
    return missing, None if star else names


# Counts of the sanity and monitors sections that must be >= 1 (and those that may be 0).
_COUNTS = (
    "sanity.gradcheck_samples", "sanity.gradcheck_dims_per_variable",
    "sanity.gradcheck_max_params", "sanity.overfit_examples", "sanity.overfit_max_steps",
    "monitors.update_ratio_freq", "monitors.activations_freq", "monitors.gradients_freq",
    "monitors.probe_size", "sanity.input_baseline_steps", "sanity.lr_range_steps",
    "sanity.lr_range_start", "sanity.lr_range_end",
)  # fmt: skip
_COUNTS_OR_ZERO = ("sanity.gradcheck_warmup_steps",)


def _validate_counts(cfg: DictConfig) -> None:
    for key in _COUNTS + _COUNTS_OR_ZERO:
        if OmegaConf.select(cfg, key) is not None:
            _positive(cfg, key, strict=key not in _COUNTS_OR_ZERO)
    if OmegaConf.select(cfg, "sanity.initial_loss_rtol") is not None:
        _positive(cfg, "sanity.initial_loss_rtol")
    start, end = (
        OmegaConf.select(cfg, "sanity.lr_range_start"),
        OmegaConf.select(cfg, "sanity.lr_range_end"),
    )
    if start is not None and end is not None:
        _require(
            end > start, "sanity.lr_range_end", end, f"must be above sanity.lr_range_start={start}"
        )
    steps = OmegaConf.select(cfg, "sanity.lr_range_steps")
    _require(steps is None or steps >= 10, "sanity.lr_range_steps", steps, "must be at least 10")


def _validate_areas(cfg: DictConfig) -> None:
    # The search and ensemble sections are checked by their own packages (no TensorFlow).
    from kerasdiag.ensemble.config import validate_ensemble_config
    from kerasdiag.search.oracle import TUNERS, validate_search

    _one_of(cfg, "tuner.name", set(TUNERS))
    if cfg.tuner.name != "none":
        validate_search(cfg)
    validate_ensemble_config(cfg)


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
