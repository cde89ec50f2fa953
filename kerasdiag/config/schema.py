"""Structured configs: the schema every composed config is validated against.

Hydra merges the YAML files of ``conf/`` into these dataclasses, so an unknown key or a value
of the wrong type is rejected while the config is composed, before TensorFlow starts. Value
ranges (lr > 0, 0 < val_fraction < 1, ...) are checked by :func:`kerasdiag.config.validate_config`.
Each section mirrors one group of ``conf/`` and one area of the package.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class AugmentConfig:
    """Random augmentation of training batches only (P5)."""

    flip: bool = False  # random horizontal flip
    crop: int = 0  # pad by this many pixels, then randomly crop back (0 = off)
    noise: float = 0.0  # std of additive Gaussian noise on normalised inputs (0 = off)


@dataclass
class DataConfig:
    name: str = "digits"  # digits | cifar10 | npz | image_folder | csv
    # cifar10: folder in the official python format (None = Keras' downloader);
    # npz: a file with x_train, y_train, x_test, y_test (class_names optional)
    path: str | None = None
    val_fraction: float = 0.1  # stratified, seeded validation split carved from training data
    limit: int | None = None  # keep at most this many training examples (stratified)
    imbalance: float | None = None  # rarest class kept at this fraction of the most frequent
    normalize: bool = True  # zero mean / unit variance from training statistics (P7)
    batch_size: int = 64
    # make_tf_dataset(training=True) only: runs train on a full seeded permutation per epoch
    shuffle_buffer: int = 10000
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # image_folder and csv: share held out as the test split when there is no test folder
    test_fraction: float = 0.2
    image_size: list[int] = field(default_factory=lambda: [32, 32])  # image_folder: (H, W)
    color_mode: str = "rgb"  # image_folder: rgb | grayscale | rgba
    target: str | None = None  # csv: the class column; every other column is a feature


@dataclass
class ModelConfig:
    """The ``model`` section's typed keys. The section itself is open: a ``_target_`` builder
    (``kerasdiag.modeling.build_from_target``) takes its own keyword arguments from it too
    (``model.blocks=3``); the keys here are type-checked by ``validate_config`` all the same."""

    # dotted path of a builder ``f(input_shape, num_classes, *, its kwargs..., layers)``,
    # called with Hydra's instantiate; None: the recipe builder ``builder`` below
    _target_: str | None = None
    builder: str = "recipes.models.mlp"  # dotted path of a function in recipes/
    hidden_units: list[int] = field(default_factory=lambda: [64])  # mlp layers
    conv_filters: list[int] = field(default_factory=lambda: [32, 64])  # convnet blocks
    dense_units: list[int] = field(default_factory=lambda: [128])  # convnet head
    kernel_size: int = 3
    activation: str = "relu"
    kernel_initializer: str | None = None  # None: He for ReLU-like, Glorot for tanh/sigmoid (P9)
    dropout: list[float] = field(default_factory=list)  # rate per block; one value = every block
    batch_norm: bool = False  # R6
    l2: float = 0.0  # kernel L2 strength (biases excluded), P3
    l1: float = 0.0  # kernel L1 strength (biases excluded), P3


@dataclass
class LossConfig:
    name: str = "softmax"  # softmax | multiclass_hinge | focal | binary (sigmoid, 2 classes)
    from_logits: bool = True
    label_smoothing: float = 0.0  # softmax: share of the target spread over all classes
    margin: float = 1.0  # multiclass_hinge (Weston-Watkins)
    gamma: float = 2.0  # focal
    alpha: float | None = None  # focal: overall weight


@dataclass
class OptimizerConfig:
    name: str = "adam"  # sgd | adagrad | rmsprop | adam | adamw
    lr: Any = 1e-3  # a number > 0, or "auto": the learning-rate range test's suggestion
    momentum: float = 0.0  # sgd
    nesterov: bool = False  # sgd
    rho: float = 0.9  # rmsprop decay
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    weight_decay: float | None = None  # decoupled (adamw) or optimizer-level decay
    initial_accumulator_value: float = 0.1  # adagrad
    clipnorm: float | None = None  # per-variable norm clipping (O3)
    clipvalue: float | None = None  # element-wise clipping (O3)
    global_clipnorm: float | None = None  # global-norm clipping (O3)
    use_ema: bool = False  # keep a moving average of the weights (O4)
    ema_momentum: float = 0.99


@dataclass
class ScheduleConfig:
    name: str = "constant"  # constant | step | exponential | inverse_time | plateau | cosine
    drop_every: int = 5  # step: epochs between drops
    factor: float = 0.5  # step and plateau: multiply the lr by this
    decay_rate: float | None = None  # exponential: a0*exp(-k*epoch); inverse_time: a0/(1+k*epoch)
    warmup_epochs: int = 0  # cosine: linear warm-up from 0 to lr
    min_lr: float = 0.0  # cosine floor, plateau floor
    patience: int = 2  # plateau
    monitor: str = "val_loss"  # plateau


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = "${trainer.checkpoint_monitor}"  # one notion of "best" per run
    patience: int = 5
    restore_best_weights: bool = True


@dataclass
class TrainerConfig:
    epochs: int = 10
    seed: int = 0
    verbose: int = 2  # Keras fit verbosity: 0 silent, 1 progress bar, 2 a line per epoch
    checkpoint_monitor: str = "val_accuracy"  # best checkpoint chosen by this metric
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # continue an interrupted run in the same directory from its last completed epoch
    # (kerasdiag.callbacks.backup.RunBackup); never start over in a directory with results
    resume: bool = True
    deterministic: bool = False  # seeded, op-deterministic TensorFlow: identical metrics.csv
    strategy: str = "none"  # none | auto | mirrored | multiworker (kerasdiag.distribute, B4)
    # data.batch_size is the global batch (split over replicas); scale_lr multiplies
    # optimizer.lr by the number of replicas (linear scaling rule, opt-in)
    scale_lr: bool = False
    tensorboard: bool = True
    # accelerators: float16 compute with float32 variables and outputs (Keras mixed_float16)
    mixed_precision: bool = False
    jit_compile: bool | None = None  # XLA; None: Keras' default ("auto")


@dataclass
class SanityConfig:
    gradcheck: bool = True
    gradcheck_samples: int = 2
    gradcheck_dims_per_variable: int = 8
    gradcheck_max_params: int = 2_000_000
    gradcheck_warmup_steps: int = 0
    initial_loss: bool = True
    initial_loss_rtol: float = 0.1
    regularization: bool = True
    regularization_factor: float = 10.0  # the "larger" strength is this times the configured
    overfit: bool = True
    overfit_examples: int = 20
    overfit_max_steps: int = 300
    overfit_loss_fraction: float = 0.05  # "near 0": below this share of the starting loss
    leakage: bool = True  # validation/test examples that are copies of training ones
    split_shift: bool = True  # validation and test drawn from visibly different distributions
    input_baseline: bool = True  # the model does clearly better with its inputs than zeros
    input_baseline_steps: int = 60
    batch_independence: bool = True  # no example's output depends on another's input
    lr_range: bool = False  # learning-rate range test (optimizer.lr=auto runs it anyway)
    lr_range_steps: int = 100
    lr_range_start: float = 1e-7
    lr_range_end: float = 10.0
    fail_fast: bool = False  # stop the run at the first failed stage


@dataclass
class MonitorsConfig:
    # Frequencies count optimizer steps; None (the default) adapts to the run: at least once
    # per epoch (twice) and 20 times per run (kerasdiag.callbacks.factory.probe_freq).
    update_ratio: bool = True
    update_ratio_freq: int | None = None
    activations: bool = True
    activations_freq: int | None = None
    gradients: bool = True
    gradients_freq: int | None = None
    learning_rate: bool = True
    filters: bool = True
    curves: bool = True
    probe_size: int = 32  # examples in the activation/gradient probe batch
    # TrainingDoctor (B1): named symptoms with fixes, judged from the monitors above
    doctor: bool = True
    doctor_stop_on: list[str] = field(default_factory=lambda: ["nan"])  # symptoms that end the run
    doctor_budget: float = 0.01  # share of training time the doctor's own probes may take
    # overrides of kerasdiag.diagnosis.Thresholds fields: +monitors.doctor_thresholds.bias=0.1
    doctor_thresholds: dict[str, float] = field(default_factory=dict)


@dataclass
class SearchStageConfig:
    """One stage of a (coarse-to-fine) search: how many trials, each trained how long (H3)."""

    trials: int = 10
    epochs: int = 1


@dataclass
class TunerConfig:
    name: str = "none"  # none | random | coarse_to_fine
    objective: str = "val_accuracy"  # val_accuracy | val_loss, on the one validation split (H4)
    # name -> {key, type: float|int|choice, min, max, sampling: linear|log, values}; checked by
    # kerasdiag.search.oracle.parse_space (untyped here so entries can be added with +tuner.space.x=)
    space: dict[str, Any] = field(default_factory=dict)
    stages: list[SearchStageConfig] = field(default_factory=list)
    keep: int = 3  # best trials of a stage whose values set the next stage's ranges
    margin: float = 0.1  # next range = kept values +- this fraction of the previous range
    diverge_factor: float = 4.0  # stop a trial whose loss exceeds this times its first loss
    seed: int = 0  # stage k samples with oracle seed ``seed + k``
    # Fault tolerance of the chief/worker processes (kerasdiag.search.distributed): a worker
    # silent for lease_seconds loses its trial to another; it sends a heartbeat every
    # heartbeat_seconds; a worker that cannot reach its chief for chief_timeout s exits (code 5).
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 5.0
    chief_timeout: float = 120.0
    # Trials run in fresh worker processes, each ending after this many trials (memory stays
    # flat however long the search); 0: every trial in the search's own process.
    trials_per_process: int = 5
    workers: int = 1  # local search: worker processes training trials side by side


@dataclass
class EnsembleConfig:
    """Ensembles (E1-E5), run by :func:`kerasdiag.ensemble.run_ensemble`."""

    name: str = "none"  # none | seeds | topk | checkpoints | ema
    # seeds: trainings with seeds trainer.seed, +1, ...; topk: best k search checkpoints;
    # checkpoints: best k epochs of one run; ema: trainings that each add their EMA model
    members: int = 3
    source: str | None = None  # topk: search run directory (its trials/) or folder of .keras


@dataclass
class Config:
    recipe: str = "digits_softmax"  # name of the recipe YAML that was selected
    data: DataConfig = field(default_factory=DataConfig)
    # untyped so a _target_ builder's own arguments fit; typed by ModelConfig in validation
    model: dict[str, Any] = field(default_factory=lambda: asdict(ModelConfig()))
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sanity: SanityConfig = field(default_factory=SanityConfig)
    monitors: MonitorsConfig = field(default_factory=MonitorsConfig)
    tuner: TunerConfig = field(default_factory=TunerConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    bayes_error: float | None = None  # optional human/Bayes error for the bias/variance table
