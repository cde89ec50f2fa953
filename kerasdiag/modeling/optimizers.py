"""Optimizers, learning-rate schedules and gradient clipping from config.

Schedules are configured in epochs (epochs, not iterations) and converted to the per-step
``keras.optimizers.schedules`` objects Keras evaluates, using the run's steps per epoch.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from kerasdiag.config.schema import OPTIMIZERS
from kerasdiag.core.errors import ConfigError


def build_schedule(
    lr: float, schedule_cfg: Any, steps_per_epoch: int, epochs: int
) -> tuple[float | keras.optimizers.schedules.LearningRateSchedule, list[keras.callbacks.Callback]]:
    """The learning rate (a float or a per-step schedule) and any callbacks it needs.

    - ``constant``: ``lr``.
    - ``step``: multiply by ``factor`` every ``drop_every`` epochs (e.g. halve every 5).
    - ``exponential``: ``lr * exp(-k * epoch)`` with ``k = decay_rate``.
    - ``inverse_time``: ``lr / (1 + k * epoch)``; ``decay_rate: null`` uses the Keras-style
      ``k = lr / epochs``.
    - ``cosine``: linear warm-up over ``warmup_epochs`` then cosine decay to ``min_lr``.
    - ``plateau``: ``lr``, multiplied by ``factor`` when ``monitor`` stalls for ``patience``
      epochs (``keras.callbacks.ReduceLROnPlateau``).
    """
    schedules = keras.optimizers.schedules
    spe = max(1, int(steps_per_epoch))
    name = schedule_cfg.name
    if name == "constant":
        return lr, []
    if name == "step":
        return schedules.ExponentialDecay(
            lr, decay_steps=int(schedule_cfg.drop_every) * spe,
            decay_rate=float(schedule_cfg.factor), staircase=True,
        ), []  # fmt: skip
    if name == "exponential":
        k = 0.1 if schedule_cfg.decay_rate is None else float(schedule_cfg.decay_rate)
        return schedules.ExponentialDecay(lr, decay_steps=spe, decay_rate=math.exp(-k)), []
    if name == "inverse_time":
        k = lr / epochs if schedule_cfg.decay_rate is None else float(schedule_cfg.decay_rate)
        return schedules.InverseTimeDecay(lr, decay_steps=spe, decay_rate=k), []
    if name == "cosine":
        warmup = int(schedule_cfg.warmup_epochs) * spe
        decay_steps = max(1, epochs * spe - warmup)
        alpha = float(schedule_cfg.min_lr) / lr
        if warmup:
            return schedules.CosineDecay(
                0.0, decay_steps, alpha=alpha, warmup_target=lr, warmup_steps=warmup
            ), []
        return schedules.CosineDecay(lr, decay_steps, alpha=alpha), []
    if name == "plateau":
        return lr, [
            keras.callbacks.ReduceLROnPlateau(
                monitor=schedule_cfg.monitor,
                factor=float(schedule_cfg.factor),
                patience=int(schedule_cfg.patience),
                min_lr=float(schedule_cfg.min_lr),
                verbose=1,
            )
        ]
    raise ConfigError("schedule.name", name, "unknown schedule")


def build_optimizer(
    opt_cfg: Any, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule
) -> keras.optimizers.Optimizer:
    """A Keras optimizer from the ``optimizer`` section, with clipping and EMA as configured."""
    if opt_cfg.name not in OPTIMIZERS:
        raise ConfigError("optimizer.name", opt_cfg.name, f"must be one of {sorted(OPTIMIZERS)}")
    common = {
        "learning_rate": learning_rate,
        "clipnorm": opt_cfg.clipnorm,
        "clipvalue": opt_cfg.clipvalue,
        "global_clipnorm": opt_cfg.global_clipnorm,
        "use_ema": bool(opt_cfg.use_ema),
        "ema_momentum": float(opt_cfg.ema_momentum),
    }
    if opt_cfg.weight_decay is not None:
        common["weight_decay"] = float(opt_cfg.weight_decay)
    specific = {
        "sgd": {"momentum": opt_cfg.momentum, "nesterov": opt_cfg.nesterov},
        "adagrad": {
            "initial_accumulator_value": opt_cfg.initial_accumulator_value,
            "epsilon": opt_cfg.epsilon,
        },
        "rmsprop": {"rho": opt_cfg.rho, "momentum": opt_cfg.momentum, "epsilon": opt_cfg.epsilon},
        "adam": {"beta_1": opt_cfg.beta_1, "beta_2": opt_cfg.beta_2, "epsilon": opt_cfg.epsilon},
        "adamw": {"beta_1": opt_cfg.beta_1, "beta_2": opt_cfg.beta_2, "epsilon": opt_cfg.epsilon},
    }[opt_cfg.name]
    return getattr(keras.optimizers, OPTIMIZERS[opt_cfg.name])(**common, **specific)


def lr_at_epoch(
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    epoch: float,
    steps_per_epoch: int,
) -> float:
    """The learning rate a configured ``learning_rate`` (a float or a schedule, as
    :func:`build_schedule` returns it) gives at the start of ``epoch`` (0-based, may be
    fractional): a plan, before any optimizer exists. A running optimizer's rate is
    :func:`current_lr`'s."""
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return float(learning_rate(int(round(epoch * steps_per_epoch))))
    return float(learning_rate)


def current_lr(optimizer: keras.optimizers.Optimizer, step: int | None = None) -> float:
    """The optimizer's learning rate: the one reading of it every callback uses.

    A schedule is evaluated at optimizer step ``step`` (default: the optimizer's iteration
    count now), so a reader after a step still gets the rate that step used; a rate set
    directly (a float, or by ``LearningRateScheduler`` / ``ReduceLROnPlateau``) is its
    current value. A loss-scaling wrapper reports its inner optimizer's rate. Through
    numpy, so it also works on a ``MirroredVariable`` under a tf.distribute strategy.

    Example:

    ```python
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    optimizer = keras.optimizers.SGD(schedule)
    current_lr(optimizer)  # 0.1 before the first step
    current_lr(optimizer, step=2)  # 0.025
    ```
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    rate = getattr(inner, "_learning_rate", None)
    if step is not None and isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return float(keras.ops.convert_to_numpy(rate(int(step))))
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def optimizer_step(optimizer: keras.optimizers.Optimizer) -> int:
    """The optimizer's iteration count (also for a ``MirroredVariable``)."""
    return int(keras.ops.convert_to_numpy(optimizer.iterations))
