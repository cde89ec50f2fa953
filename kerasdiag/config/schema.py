"""Structured configs: the schema every composed config is validated against, and its rules.

Hydra merges the YAML files of ``conf/`` into these dataclasses, so an unknown key or a value
of the wrong type is rejected while the config is composed, before TensorFlow starts. What
types cannot say is declared on the field when it is a range (``val_fraction: float =
ranged(0.1, "(0,1)")``), and checked by one validator beside each dataclass otherwise (a known
optimizer name, rules between keys: ``check_data`` after ``DataConfig``, ...); all of them run
in :func:`kerasdiag.config.validate_config`. The names each group accepts are registered here once
(``DATASETS``, ``LOSSES``, ``OPTIMIZERS``, ...); the modules that build them look them up
here. Each section mirrors one group of ``conf/`` and one area of the package; a YAML file of
``conf/`` sets only what differs from these defaults.

Why one module of ~570 lines: each key's type, default and rule are read in one place (the
dataclass and the validator beside it), and the sections relate to each other (a schedule's
``min_lr`` against the optimizer's ``lr``, the checkpoint monitor against early stopping). The
search space, a language of its own, is :mod:`kerasdiag.config.search_space`.
"""

from __future__ import annotations

import functools
import glob
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from kerasdiag.config.checks import (
    FLOAT32_MAX,
    MAX_SEED,
    check_builder,
    check_path,
    check_range,
    finite,
    get,
    one_of,
    positive,
    ranged,
    require,
)
from kerasdiag.core.activations import RECIPE_ACTIVATIONS
from kerasdiag.core.errors import ConfigError
from kerasdiag.diagnosis import SYMPTOMS, Thresholds

# -- the names each group accepts (one registry each) -------------------------------------------

# kerasdiag.modeling.losses.build_loss; binary: one logit, sigmoid + binary cross-entropy (2 classes)
LOSSES = ("softmax", "multiclass_hinge", "focal", "binary", "multilabel", "mse", "mae", "huber")
# What each loss trains the model for (the head, the labels, the metrics and the rules the
# checks apply follow from it): classes, several independent 0/1 labels, or numbers.
REGRESSION_LOSSES = ("mse", "mae", "huber")
TASKS = ("classification", "multilabel", "regression")


def loss_task(loss_name: str) -> str:
    """The task ``loss.name`` trains for: ``regression`` (mse, mae, huber), ``multilabel``
    (independent sigmoids), else ``classification``.

    Example:
        >>> loss_task("huber"), loss_task("multilabel"), loss_task("softmax")
        ('regression', 'multilabel', 'classification')
    """
    if loss_name in REGRESSION_LOSSES:
        return "regression"
    return "multilabel" if loss_name == "multilabel" else "classification"


def task_monitor(loss_name: str) -> str:
    """The validation metric that picks a run's best epoch by default: ``val_loss`` for a
    regression loss (it has no accuracy), else ``val_accuracy``.

    Example:
        >>> task_monitor("mse"), task_monitor("softmax")
        ('val_loss', 'val_accuracy')
    """
    return "val_loss" if loss_task(str(loss_name)) == "regression" else "val_accuracy"


# ${kd_task_monitor:${loss.name}}: the defaults of trainer.checkpoint_monitor and
# tuner.objective follow the task, so `loss=mse data=csv ...` needs no monitor override.
OmegaConf.register_new_resolver("kd_task_monitor", task_monitor, replace=True)

OPTIMIZERS = {  # name -> class of keras.optimizers (kerasdiag.modeling.optimizers.build_optimizer)
    "sgd": "SGD",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "adamw": "AdamW",
}
# kerasdiag.modeling.optimizers.build_schedule
SCHEDULES = ("constant", "step", "exponential", "inverse_time", "plateau", "cosine")
STRATEGIES = ("none", "auto", "mirrored", "multiworker")  # kerasdiag.modeling.distribute
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")  # what build_model compiles
# ... per task (kerasdiag.modeling.losses.task_metrics): regression has no accuracy; a
# multi-label model's accuracy is the exact match of every label, label_accuracy the share
# of single label decisions that are right
TASK_METRICS = {
    "classification": METRICS,
    "multilabel": (*METRICS, "label_accuracy", "val_label_accuracy"),
    "regression": ("loss", "val_loss", "mae", "val_mae", "rmse", "val_rmse"),
}
# kerasdiag.search.oracle.build_oracle: keras-tuner's oracles, "none" = no search
TUNERS = ("none", "random", "coarse_to_fine", "hyperband", "bayesian")
ENSEMBLES = ("none", "seeds", "topk", "checkpoints", "ema")  # kerasdiag.ensemble.run

# The validators, in the order validate_config runs them: each takes the whole config (a few
# rules relate two sections) and raises a one-line ConfigError naming the key.
VALIDATORS: list[Callable[[Any], None]] = []


def validator(func: Callable[[Any], None]) -> Callable[[Any], None]:
    VALIDATORS.append(func)
    return func


# The data sets ``data.name`` may name (kerasdiag.data.loaders.LOADERS has one loader each),
# and those read from a path the user must give, with what that path is.
DATASETS = ("digits", "cifar10", "npz", "image_folder", "csv", "tfrecord", "diabetes",
            "digits_attributes")  # fmt: skip
# The tasks each data set can serve: class data by default; the real regression set
# (scikit-learn's diabetes), the digits' derived attributes (several labels per image), and
# a CSV table or .npz arrays, whose targets serve any task.
DATASET_TASKS = {"diabetes": ("regression",), "digits_attributes": ("multilabel",),
                 "csv": TASKS, "npz": TASKS}  # fmt: skip
PATH_DATASETS = {"npz": "an .npz file", "csv": "a CSV file", "image_folder": "a folder",
                 "tfrecord": "TFRecord files (a file or a glob pattern)"}  # fmt: skip
FILE_DATASETS = ("npz", "csv")
COLOR_MODES = ("rgb", "grayscale", "rgba")  # keras.utils.image_dataset_from_directory's
BAD_FILE_ACTIONS = ("fail", "skip")  # data.on_bad_file
CACHES = (None, "memory")  # data.cache

_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")


@dataclass
class AugmentConfig:
    """Random augmentation of training batches only."""

    flip: bool = False  # random horizontal flip
    crop: int = ranged(0, ">=0")  # pad by this many pixels, then randomly crop back (0 = off)
    # std of additive Gaussian noise on normalised inputs (0 = off)
    noise: float = ranged(0.0, ">=0")


@dataclass
class DataConfig:
    name: str = "digits"  # one of DATASETS
    # cifar10: folder in the official python format (None = Keras' downloader);
    # npz: a file with x_train, y_train, x_test, y_test (class_names optional)
    path: str | None = None
    # stratified, seeded validation split carved from training data
    val_fraction: float = ranged(0.1, "(0,1)")
    limit: int | None = ranged(None, ">0")  # keep at most this many training examples (stratified)
    # training split long-tailed: its rarest class kept at this fraction of the most frequent
    # (validation, carved before, follows the test split)
    imbalance: float | None = ranged(None, "(0,1]")
    normalize: bool = True  # zero mean / unit variance from training statistics
    batch_size: int = ranged(64, ">0")
    # make_tf_dataset(training=True) only: runs train on a full seeded permutation per epoch
    shuffle_buffer: int = ranged(10000, ">0")
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # image_folder and csv: share held out as the test split when there is no test folder
    test_fraction: float = ranged(0.2, "(0,1)")
    image_size: list[int] = field(default_factory=lambda: [32, 32])  # image_folder: (H, W)
    color_mode: str = "rgb"  # image_folder: one of COLOR_MODES
    # csv: the class column (loss=softmax, binary, ...), the number column(s) to predict
    # (loss=mse, mae, huber), or the 0/1 label columns (loss=multilabel: [a, b, c]); every
    # other column is a feature
    target: Any = None
    # regression: targets standardised by their training mean and std (the loss is of unit
    # order whatever their units); mae and rmse are reported in the targets' units
    scale_target: bool = True
    # image_folder (streamed from disk): an image that does not decode is skipped and
    # counted (skip) or ends the run naming it (fail)
    on_bad_file: str = "fail"  # one of BAD_FILE_ACTIONS
    # streamed sources: examples per split decoded into memory for the checks and probes
    # (training split; validation and test get half as many)
    sample_size: int = ranged(1000, ">0")
    # streamed sources: keep the decoded images in memory after their first read ("memory"),
    # or decode them from disk every epoch (None)
    cache: str | None = None


@validator
def check_data(cfg: Any) -> None:
    one_of(cfg, "data.name", DATASETS)
    if cfg.data.path is not None and cfg.data.name == "tfrecord":
        require(bool(glob.glob(os.path.expanduser(str(cfg.data.path)))), "data.path",
                cfg.data.path, "matches no file")  # fmt: skip
    elif cfg.data.path is not None:
        kind = "file" if cfg.data.name in FILE_DATASETS else "directory"
        check_path("data.path", cfg.data.path, kind)
    elif cfg.data.name in PATH_DATASETS:
        require(False, "data.path", None,
                f"data.name={cfg.data.name} needs the path of {PATH_DATASETS[cfg.data.name]}")  # fmt: skip
    size = list(cfg.data.image_size)
    require(len(size) == 2 and all(0 < v <= 65536 for v in size), "data.image_size", size,
            "must be [height, width], each > 0")  # fmt: skip
    one_of(cfg, "data.color_mode", COLOR_MODES)
    one_of(cfg, "data.on_bad_file", BAD_FILE_ACTIONS)
    cache = cfg.data.cache
    require(cache in CACHES or (isinstance(cache, str) and not Path(cache).is_file()),
            "data.cache", cache, "must be null (decode from disk every epoch), memory, or a "
            "folder for the decoded images")  # fmt: skip
    seed = cfg.data.seed
    require(0 <= seed <= MAX_SEED, "data.seed", seed, f"must be in [0, {MAX_SEED}]")
    check_target(cfg)
    task, served = loss_task(cfg.loss.name), DATASET_TASKS.get(cfg.data.name, ("classification",))
    if task not in served:
        suits = {"regression": "loss=mse, mae or huber", "multilabel": "loss=multilabel",
                 "classification": "loss=softmax (or binary, focal, multiclass_hinge)"}  # fmt: skip
        others = [n for n in DATASETS if task in DATASET_TASKS.get(n, ("classification",))]
        holds = {"regression": "numbers to predict", "multilabel": "several 0/1 labels",
                 "classification": "class labels"}  # fmt: skip
        require(False, "loss.name", cfg.loss.name,
                f"trains for {task}, but data={cfg.data.name} holds {holds[served[0]]}: use "
                f"{suits[served[0]]}, or data={' / '.join(others)} for {task}")  # fmt: skip


def target_columns(target: Any) -> list[str]:
    """``data.target`` as a list of column names (one name, or a list of them)."""
    if target is None:
        return []
    if isinstance(target, str):
        return [target]
    return [str(t) for t in target]


def check_target(cfg: Any) -> None:
    """``data.target`` against the task the loss trains for: one class column for a
    classifier, several 0/1 columns or one for multi-label, number column(s) for regression."""
    target, task = cfg.data.target, loss_task(cfg.loss.name)
    if target is None:
        return
    names = target_columns(target)
    shown = names[0] if isinstance(target, str) else names
    require(bool(names) and all(n.strip() for n in names), "data.target", shown,
            "must name a column, or a list of columns")  # fmt: skip
    require(len(set(names)) == len(names), "data.target", shown, "names a column twice")
    require(len(names) == 1 or task != "classification", "data.target", shown,
            f"loss={cfg.loss.name} predicts one class column; several columns are "
            "loss=multilabel (0/1 labels) or a regression loss (loss=mse, mae, huber)")  # fmt: skip


@dataclass
class ModelConfig:
    """The ``model`` section's typed keys. The section itself is open: a ``_target_`` builder
    (``kerasdiag.modeling.factory.build_from_target``) takes its own keyword arguments from it too
    (``model.blocks=3``); the keys here are type-checked by ``check_model`` all the same."""

    # dotted path of a builder ``f(input_shape, num_classes, *, its kwargs..., layers)``,
    # called with Hydra's instantiate; None: the recipe builder ``builder`` below
    _target_: str | None = None
    builder: str = "recipes.models.mlp"  # dotted path of a function in recipes/
    hidden_units: list[int] = field(default_factory=lambda: [64])  # mlp layers
    conv_filters: list[int] = field(default_factory=lambda: [32, 64])  # convnet blocks
    dense_units: list[int] = field(default_factory=lambda: [128])  # convnet head
    kernel_size: int = ranged(3, ">0")
    activation: str = "relu"
    kernel_initializer: str | None = None  # None: He for ReLU-like, Glorot for tanh/sigmoid
    dropout: list[float] = field(default_factory=list)  # rate per block; one value = every block
    batch_norm: bool = False
    l2: float = ranged(0.0, ">=0")  # kernel L2 strength (biases excluded)
    l1: float = ranged(0.0, ">=0")  # kernel L1 strength (biases excluded)


@validator
def check_model(cfg: Any) -> None:
    type_model_section(cfg)
    for key in ("builder", "_target_") if cfg.model._target_ else ("builder",):
        path = cfg.model[key]
        require(isinstance(path, str) and bool(_DOTTED.match(path)), f"model.{key}", path,
                "must be a dotted path such as recipes.models.convnet")  # fmt: skip
        check_builder(path, f"model.{key}")
    one_of(cfg, "model.activation", RECIPE_ACTIVATIONS)
    for key in ("hidden_units", "conv_filters", "dense_units"):
        values = list(cfg.model[key])
        require(all(0 < v <= 2**31 - 1 for v in values), f"model.{key}", values,
                "every entry must be > 0")  # fmt: skip
    rates = list(cfg.model.dropout)
    require(all(0 <= r < 1 for r in rates), "model.dropout", rates, "rates must be in [0, 1)")


def type_model_section(cfg: Any) -> None:
    """The model section is open (a ``_target_`` builder's own arguments): its schema keys are
    typed here as the structured schema types the other sections, and written back converted;
    other keys need ``_target_``."""
    model = cfg.model
    extra = [k for k in model if k not in _model_schema()]
    if extra and not model.get("_target_"):
        require(False, f"model.{extra[0]}", model[extra[0]],
                "unknown key (not in the config schema; a builder's own arguments need "
                "model._target_)")  # fmt: skip
    for key in _model_schema():
        try:
            typed = OmegaConf.merge(_model_schema(), {key: model[key]})[key]
        except OmegaConfBaseException as exc:
            reason = " ".join(str(getattr(exc, "msg", None) or exc).splitlines()[0].split())
            raise ConfigError(f"model.{key}", model[key], reason) from None
        with open_dict(model):
            model[key] = typed


@functools.cache
def _model_schema() -> Any:
    return OmegaConf.structured(ModelConfig)


@dataclass
class LossConfig:
    name: str = "softmax"  # one of LOSSES
    from_logits: bool = True
    label_smoothing: float = ranged(0.0, "[0,1)")  # softmax: share spread over all classes
    margin: float = ranged(1.0, ">0")  # multiclass_hinge (Weston-Watkins)
    gamma: float = ranged(2.0, ">=0")  # focal
    alpha: float | None = ranged(None, "(0,1]")  # focal: overall weight
    delta: float = ranged(1.0, ">0")  # huber: quadratic within delta of the target, linear beyond


@validator
def check_loss(cfg: Any) -> None:
    one_of(cfg, "loss.name", LOSSES)
    task = loss_task(cfg.loss.name)
    if task == "classification":
        return
    require(not cfg.loss.label_smoothing or task == "multilabel", "loss.label_smoothing",
            cfg.loss.label_smoothing, f"applies to class labels, not to loss={cfg.loss.name}")  # fmt: skip
    # Refused up front rather than ranking trials by another task's rule.
    require(cfg.tuner.name == "none" or cfg.tuner.objective in monitors_of(cfg),
            "tuner.objective", cfg.tuner.objective,
            f"loss={cfg.loss.name} ({task}) has no accuracy: rank trials by val_loss")  # fmt: skip
    require(cfg.data.imbalance is None, "data.imbalance", cfg.data.imbalance,
            f"makes classes long-tailed; loss={cfg.loss.name} ({task}) has no classes")  # fmt: skip


def monitors_of(cfg: Any) -> tuple[str, ...]:
    """The metric names a run of this config logs: its task's (``TASK_METRICS``)."""
    return TASK_METRICS[loss_task(cfg.loss.name)]


def one_of_monitors(cfg: Any, key: str) -> None:
    """``key`` names a metric the run logs; regression has none called accuracy."""
    value = get(cfg, key)
    allowed = monitors_of(cfg)
    task = loss_task(cfg.loss.name)
    why = (
        f" (loss={cfg.loss.name} is {task}, without accuracy: set {key}=val_loss)"
        if task == "regression"
        else ""
    )
    require(value in allowed, key, value, f"must be one of {', '.join(allowed)}{why}")


@dataclass
class OptimizerConfig:
    name: str = "adam"  # one of OPTIMIZERS
    lr: Any = 1e-3  # a number > 0, or "auto": the learning-rate range test's suggestion
    momentum: float = ranged(0.0, "[0,1)")  # sgd
    nesterov: bool = False  # sgd
    rho: float = ranged(0.9, "[0,1)")  # rmsprop decay
    beta_1: float = ranged(0.9, "[0,1)")
    beta_2: float = ranged(0.999, "[0,1)")
    epsilon: float = ranged(1e-7, ">0")
    weight_decay: float | None = ranged(None, ">=0")  # decoupled (adamw) or optimizer-level decay
    initial_accumulator_value: float = ranged(0.1, ">=0")  # adagrad
    clipnorm: float | None = ranged(None, ">0")  # per-variable norm clipping
    clipvalue: float | None = ranged(None, ">0")  # element-wise clipping
    global_clipnorm: float | None = ranged(None, ">0")  # global-norm clipping
    use_ema: bool = False  # keep a moving average of the weights
    ema_momentum: float = ranged(0.99, "[0,1)")


@validator
def check_optimizer(cfg: Any) -> None:
    opt = cfg.optimizer
    one_of(cfg, "optimizer.name", OPTIMIZERS)
    if opt.lr == "auto":  # the learning-rate range test picks it (kerasdiag.checks.lr_range)
        require(cfg.tuner.name == "none", "optimizer.lr", "auto",
                "a search samples the learning rate itself: give a number")  # fmt: skip
    else:
        require(finite(opt.lr), "optimizer.lr", opt.lr, "must be a number > 0 or auto")
        positive(cfg, "optimizer.lr")
        # Keras keeps the rate as float32: a larger value becomes inf and the first step NaN.
        require(float(opt.lr) <= FLOAT32_MAX, "optimizer.lr", opt.lr,
                f"must be finite in float32 (at most {FLOAT32_MAX:.4g})")  # fmt: skip
    require(opt.clipnorm is None or opt.global_clipnorm is None, "optimizer.global_clipnorm",
            opt.global_clipnorm, "clip by clipnorm or by global_clipnorm, not both")  # fmt: skip
    require(not opt.nesterov or opt.momentum > 0, "optimizer.nesterov", opt.nesterov,
            "Nesterov momentum needs optimizer.momentum > 0")  # fmt: skip


@dataclass
class ScheduleConfig:
    name: str = "constant"  # one of SCHEDULES
    drop_every: int = ranged(5, ">0")  # step: epochs between drops
    factor: float = ranged(0.5, "(0,1)")  # step and plateau: multiply the lr by this
    # exponential: a0*exp(-k*epoch); inverse_time: a0/(1+k*epoch)
    decay_rate: float | None = ranged(None, ">=0")
    warmup_epochs: int = ranged(0, ">=0")  # cosine: linear warm-up from 0 to lr
    min_lr: float = ranged(0.0, ">=0")  # cosine floor, plateau floor
    patience: int = ranged(2, ">=0")  # plateau
    monitor: str = "val_loss"  # plateau


@validator
def check_schedule(cfg: Any) -> None:
    one_of(cfg, "schedule.name", SCHEDULES)
    lr = cfg.optimizer.lr
    require(lr == "auto" or cfg.schedule.min_lr < lr, "schedule.min_lr", cfg.schedule.min_lr,
            "must be below optimizer.lr")  # fmt: skip
    one_of_monitors(cfg, "schedule.monitor")


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = "${trainer.checkpoint_monitor}"  # one notion of "best" per run
    patience: int = ranged(5, ">=0")
    restore_best_weights: bool = True


@dataclass
class TrainerConfig:
    epochs: int = ranged(10, ">0")
    seed: int = 0
    verbose: int = 2  # Keras fit verbosity: 0 silent, 1 progress bar, 2 a line per epoch
    # best checkpoint chosen by this metric; by default val_accuracy, val_loss for regression
    checkpoint_monitor: str = "${kd_task_monitor:${loss.name}}"
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # continue an interrupted run in the same directory from its last completed epoch
    # (kerasdiag.callbacks.run_backup.RunBackup); never start over in a directory with results
    resume: bool = True
    deterministic: bool = False  # seeded, op-deterministic TensorFlow: identical metrics.csv
    strategy: str = "none"  # one of STRATEGIES (kerasdiag.modeling.distribute)
    # data.batch_size is the global batch (split over replicas); scale_lr multiplies
    # optimizer.lr by the number of replicas (linear scaling rule, opt-in)
    scale_lr: bool = False
    tensorboard: bool = True
    # accelerators: float16 compute with float32 variables and outputs (Keras mixed_float16)
    mixed_precision: bool = False
    jit_compile: bool | None = None  # XLA; None: Keras' default ("auto")
    # fit(class_weight=...) for a classifier: null, balanced (each class weighs
    # n / (classes * n_class)) or {class index: weight}; the checks read the weighted loss too
    class_weight: Any = None
    # score the test split on each image and its mirror image, outputs averaged (reported
    # next to the plain scores, under "flip"); a classifier on images only
    test_time_flip: bool = False


@validator
def check_trainer(cfg: Any) -> None:
    require(cfg.schedule.warmup_epochs < cfg.trainer.epochs, "schedule.warmup_epochs",
            cfg.schedule.warmup_epochs, "must be fewer than trainer.epochs")  # fmt: skip
    one_of(cfg, "trainer.strategy", STRATEGIES)
    require(cfg.trainer.verbose in (0, 1, 2), "trainer.verbose", cfg.trainer.verbose,
            "must be 0, 1 or 2")  # fmt: skip
    for key in ("trainer.checkpoint_monitor", "trainer.early_stopping.monitor"):
        one_of_monitors(cfg, key)
    es = cfg.trainer.early_stopping
    require(not es.enabled or es.monitor == cfg.trainer.checkpoint_monitor,
            "trainer.early_stopping.monitor", es.monitor,
            f"must equal trainer.checkpoint_monitor ({cfg.trainer.checkpoint_monitor}): one "
            "metric chooses the best epoch, the checkpoint kept and the model tested")  # fmt: skip
    seed = cfg.trainer.seed
    require(0 <= seed <= MAX_SEED, "trainer.seed", seed, f"must be in [0, {MAX_SEED}]")
    if cfg.trainer.get("test_time_flip"):
        require(loss_task(cfg.loss.name) == "classification", "trainer.test_time_flip", True,
                f"scores a classifier's accuracy, and loss={cfg.loss.name} does not "
                "classify")  # fmt: skip
    weights = cfg.trainer.get("class_weight")
    if weights is not None:
        require(weights == "balanced" or isinstance(weights, Mapping), "trainer.class_weight",
                weights, "must be null, balanced or a mapping {class index: weight}")  # fmt: skip
        require(loss_task(cfg.loss.name) == "classification", "trainer.class_weight", weights,
                f"weighs classes, and loss={cfg.loss.name} trains "
                f"{loss_task(cfg.loss.name)}: use sample weights in your own fit")  # fmt: skip


@dataclass
class SanityConfig:
    gradcheck: bool = True
    gradcheck_samples: int = ranged(2, ">0")
    gradcheck_dims_per_variable: int = ranged(8, ">0")
    gradcheck_max_params: int = ranged(2_000_000, ">0")
    gradcheck_warmup_steps: int = ranged(0, ">=0")
    initial_loss: bool = True
    initial_loss_rtol: float = ranged(0.1, ">0")
    regularization: bool = True
    regularization_factor: float = 10.0  # the "larger" strength is this times the configured
    overfit: bool = True
    overfit_examples: int = ranged(20, ">0")
    overfit_max_steps: int = ranged(300, ">0")
    overfit_loss_fraction: float = 0.05  # "near 0": below this share of the starting loss
    leakage: bool = True  # validation/test examples that are copies of training ones
    split_shift: bool = True  # validation and test drawn from visibly different distributions
    input_baseline: bool = True  # the model does clearly better with its inputs than zeros
    input_baseline_steps: int = ranged(60, ">0")
    batch_independence: bool = True  # no example's output depends on another's input
    lr_range: bool = False  # learning-rate range test (optimizer.lr=auto runs it anyway)
    lr_range_steps: int = ranged(100, ">0")
    lr_range_start: float = ranged(1e-7, ">0")
    lr_range_end: float = ranged(10.0, ">0")
    fail_fast: bool = False  # stop the run at the first failed stage


@validator
def check_sanity(cfg: Any) -> None:
    start, end = cfg.sanity.lr_range_start, cfg.sanity.lr_range_end
    require(end > start, "sanity.lr_range_end", end, f"must be above sanity.lr_range_start={start}")
    steps = cfg.sanity.lr_range_steps
    require(steps >= 10, "sanity.lr_range_steps", steps, "must be at least 10")


@dataclass
class MonitorsConfig:
    # Frequencies count optimizer steps; None (the default) adapts to the run: twice per epoch
    # until 20 probes are taken, then at least once per epoch and 20 times per planned run
    # (kerasdiag.callbacks.factory.probe_schedule).
    update_ratio: bool = True
    update_ratio_freq: int | None = ranged(None, ">0")
    activations: bool = True
    activations_freq: int | None = ranged(None, ">0")
    gradients: bool = True
    gradients_freq: int | None = ranged(None, ">0")
    learning_rate: bool = True
    filters: bool = True
    curves: bool = True
    probe_size: int = ranged(32, ">0")  # examples in the activation/gradient probe batch
    # TrainingDoctor: named symptoms with fixes, judged from the monitors above
    doctor: bool = True
    doctor_stop_on: list[str] = field(default_factory=lambda: ["nan"])  # symptoms that end the run
    doctor_budget: float = 0.01  # share of training time the doctor's own probes may take
    # overrides of kerasdiag.diagnosis.rules.Thresholds fields: +monitors.doctor_thresholds.bias=0.1
    doctor_thresholds: dict[str, float] = field(default_factory=dict)


@validator
def check_monitors(cfg: Any) -> None:
    validate_doctor_config(cfg.monitors)


def validate_doctor_config(monitors_cfg: Any) -> None:
    """Check the doctor keys of the ``monitors`` section (part of :func:`validate_config`).

    ``doctor_stop_on`` must name symptoms the doctor knows, ``doctor_thresholds`` fields of
    :class:`kerasdiag.diagnosis.rules.Thresholds` with positive numbers, ``doctor_budget`` lie in
    (0, 1]. Raises :class:`~kerasdiag.core.errors.ConfigError` naming the key.

    Example:
        >>> validate_doctor_config({"doctor_budget": 5})
        Traceback (most recent call last):
        ...
        kerasdiag.core.errors.ConfigError: invalid config: monitors.doctor_budget=5: must be a number in (0, 1]
    """

    def value(key: str) -> Any:
        return monitors_cfg.get(key) if hasattr(monitors_cfg, "get") else None

    stop_on = value("doctor_stop_on")
    names = [stop_on] if isinstance(stop_on, str) else list(stop_on or [])
    unknown = [n for n in names if n not in SYMPTOMS]
    require(not unknown, "monitors.doctor_stop_on", names,
            f"unknown symptoms {unknown}; known: {', '.join(SYMPTOMS)}")  # fmt: skip
    for name, number in dict(value("doctor_thresholds") or {}).items():
        try:
            Thresholds.of({name: number})
        except ValueError as exc:
            raise ConfigError(f"monitors.doctor_thresholds.{name}", number, str(exc)) from None
    budget = value("doctor_budget")
    require(budget is None or (finite(budget) and 0 < budget <= 1), "monitors.doctor_budget",
            budget, "must be a number in (0, 1]")  # fmt: skip


@dataclass
class SearchStageConfig:
    """One stage of a (coarse-to-fine) search: how many trials, each trained how long."""

    trials: int = 10
    epochs: int = 1


@dataclass
class TunerConfig:
    name: str = "none"  # one of TUNERS: none | random | coarse_to_fine | hyperband | bayesian
    # val_accuracy | val_loss, on the one validation split (by default as checkpoint_monitor)
    objective: str = "${kd_task_monitor:${loss.name}}"
    # name -> {key, type: float|int|choice, min, max, sampling: linear|log, values}; checked by
    # kerasdiag.config.search_space.parse_space (untyped here so entries can be added with +tuner.space.x=)
    space: dict[str, Any] = field(default_factory=dict)
    stages: list[SearchStageConfig] = field(default_factory=list)
    keep: int = 3  # best trials of a stage whose values set the next stage's ranges
    margin: float = 0.1  # next range = kept values +- this fraction of the previous range
    diverge_factor: float = 4.0  # stop a trial whose loss exceeds this times its first loss
    seed: int = 0  # the oracle samples with seed ``seed + 1`` (keras-tuner draws its own for 0)
    # Fault tolerance of the chief/worker processes (kerasdiag.search.distributed): a worker
    # silent for lease_seconds loses its trial to another; it sends a heartbeat every
    # heartbeat_seconds; a worker that cannot reach its chief for chief_timeout s exits (code 5).
    lease_seconds: float = 60.0
    heartbeat_seconds: float = ranged(5.0, ">0")
    chief_timeout: float = ranged(120.0, ">0")
    # Trials run in worker processes (memory stays flat however long the search; 0: every trial
    # in the search's own process). A worker process keeps TensorFlow and the data across
    # trials and ends after trials_per_process trials, or sooner once its resident memory has
    # grown by more than worker_memory_mb since its first trial (0: no memory limit); another
    # takes its place. start_ahead: a local search starts that one while the previous one
    # trains its last trial (start-up overlaps training; two processes' memory meanwhile).
    # Default: one process for as long as its memory allows (a digits MLP grows ~4.6 MB per
    # trial: ~20 trials per process); benchmarks/bench_search_workers.py compares the designs.
    trials_per_process: int = 100
    worker_memory_mb: float = 100.0
    start_ahead: bool = False
    workers: int = 1  # local search: worker processes training trials side by side
    # hyperband: keep 1/factor of each bracket's trials for the next round (epochs x factor);
    # its largest budget is tuner.stages.0.epochs, its brackets run hyperband_iterations times
    factor: int = 3
    hyperband_iterations: int = 1


@validator
def check_tuner(cfg: Any) -> None:
    """The search's own settings; the space and stages are parsed by
    :func:`kerasdiag.config.search_space.validate_search`."""
    tuner = cfg.tuner
    one_of(cfg, "tuner.name", TUNERS)
    if tuner.name == "none":
        return
    require(tuner.objective in ("val_accuracy", "val_loss"), "tuner.objective", tuner.objective,
            "must be val_accuracy or val_loss (trials are compared on the validation split)")  # fmt: skip
    require(tuner.keep >= 1, "tuner.keep", tuner.keep, "must be >= 1")
    require(finite(tuner.margin) and tuner.margin > 0, "tuner.margin", tuner.margin,
            "must be > 0 (each stage's ranges keep some room around the best trials)")  # fmt: skip
    require(finite(tuner.diverge_factor) and tuner.diverge_factor > 1,
            "tuner.diverge_factor", tuner.diverge_factor, "must be > 1")  # fmt: skip
    require(finite(tuner.lease_seconds) and tuner.lease_seconds >= 2 * tuner.heartbeat_seconds,
            "tuner.lease_seconds", tuner.lease_seconds,
            "must be finite and at least 2 x tuner.heartbeat_seconds (a lease outlives a missed "
            "heartbeat)")  # fmt: skip
    require(tuner.trials_per_process >= 0, "tuner.trials_per_process", tuner.trials_per_process,
            "must be >= 0 (0: every trial in this process)")  # fmt: skip
    require(finite(tuner.worker_memory_mb) and tuner.worker_memory_mb >= 0,
            "tuner.worker_memory_mb", tuner.worker_memory_mb,
            "must be >= 0 (MB a worker process may grow before it is replaced; 0: no limit)")  # fmt: skip
    require(not tuner.start_ahead or tuner.trials_per_process > 0, "tuner.start_ahead",
            tuner.start_ahead, "needs worker processes (tuner.trials_per_process > 0)")  # fmt: skip
    require(tuner.workers >= 1, "tuner.workers", tuner.workers, "must be >= 1")
    require(tuner.workers == 1 or tuner.trials_per_process > 0, "tuner.workers", tuner.workers,
            "several local workers need worker processes (tuner.trials_per_process > 0)")  # fmt: skip
    require(tuner.factor >= 2, "tuner.factor", tuner.factor, "must be >= 2")


@dataclass
class EnsembleConfig:
    """Ensembles, run by :func:`kerasdiag.ensemble.run_ensemble`."""

    name: str = "none"  # one of ENSEMBLES
    # seeds: trainings with seeds trainer.seed, +1, ...; topk: best k search checkpoints;
    # checkpoints: best k epochs of one run; ema: trainings that each add their EMA model
    members: int = 3
    source: str | None = None  # topk: search run directory (its trials/) or folder of .keras


@validator
def validate_ensemble_config(cfg: Any) -> None:
    """The ensemble section.

    Example:
        >>> from kerasdiag.config import load_config
        >>> validate_ensemble_config(load_config(["ensemble=seeds", "ensemble.members=1"], validate=False))
        Traceback (most recent call last):
        ...
        kerasdiag.core.errors.ConfigError: invalid config: ensemble.members=1: seeds needs at least 2 members
    """
    ens = cfg.ensemble
    one_of(cfg, "ensemble.name", ENSEMBLES)
    if ens.name == "none":
        return
    require(cfg.tuner.name == "none", "ensemble.name", ens.name,
            "cannot run with a search (tuner); run the search first, then "
            "ensemble=topk ensemble.source=<the search's run directory>")  # fmt: skip
    # The EMA ensemble gets two members (best checkpoint + moving average) per training.
    least = 1 if ens.name == "ema" else 2
    require(ens.members >= least, "ensemble.members", ens.members,
            f"{ens.name} needs at least {least} members")  # fmt: skip
    if ens.name == "checkpoints":
        require(ens.members <= cfg.trainer.epochs, "ensemble.members", ens.members,
                f"exceeds trainer.epochs={cfg.trainer.epochs}: one checkpoint per epoch")  # fmt: skip
    if ens.name == "topk":
        source = ens.source
        require(source is not None and bool(str(source).strip()), "ensemble.source", source,
                "topk needs the search's run directory")  # fmt: skip
        require(Path(str(source)).expanduser().is_dir(), "ensemble.source", source,
                "no such directory")  # fmt: skip


@dataclass
class Config:
    recipe: str = "digits_softmax"  # name of the recipe YAML that was selected
    data: DataConfig = field(default_factory=DataConfig)
    # untyped so a _target_ builder's own arguments fit; typed by ModelConfig in check_model
    model: dict[str, Any] = field(default_factory=lambda: asdict(ModelConfig()))
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sanity: SanityConfig = field(default_factory=SanityConfig)
    monitors: MonitorsConfig = field(default_factory=MonitorsConfig)
    tuner: TunerConfig = field(default_factory=TunerConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    # optional human/Bayes error for the bias/variance table
    bayes_error: float | None = ranged(None, "[0,1]")


# Open sections (a plain dict in Config) and the dataclass that types their known keys.
OPEN_SECTIONS = {"model": ModelConfig}


def _ranged_keys(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, range) of every field declared with :func:`ranged`, sections included."""
    for f in fields(cls):
        section = OPEN_SECTIONS.get(f.name) if cls is Config else None
        if section is not None or is_dataclass(f.default_factory):
            yield from _ranged_keys(section or f.default_factory, f"{prefix}{f.name}.")
        elif "range" in f.metadata:
            yield f"{prefix}{f.name}", f.metadata["range"]


@functools.cache
def ranged_keys() -> tuple[tuple[str, str], ...]:
    return tuple(_ranged_keys())


def check_ranges(cfg: Any) -> None:
    """The range of every field declared with :func:`ranged` (first: the validators rely on it)."""
    for key, rule in ranged_keys():
        check_range(cfg, key, rule)


VALIDATORS.insert(0, check_ranges)
