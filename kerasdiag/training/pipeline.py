"""The training pipeline ``scripts/train.py`` runs: every stage is a function of the config.

    data -> model -> sanity stages -> fit with callbacks -> test evaluation -> run files

Each function is usable on its own (tests, notebooks, the search and ensemble code).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from kerasdiag.callbacks import StopOnSignal, evaluate_with_ema
from kerasdiag.callbacks.base import MonitorWarning, WritesBarrier
from kerasdiag.callbacks.best_checkpoint import BestCheckpoint
from kerasdiag.callbacks.epoch_tensorboard import EpochTensorBoard
from kerasdiag.callbacks.factory import Monitors, monitor_callbacks, probe_batch
from kerasdiag.callbacks.metrics_csv import MetricsCSV
from kerasdiag.callbacks.nan_stop import NaNStop, NonFiniteLossError, first_non_finite
from kerasdiag.callbacks.probe_batch import ProbeBatch
from kerasdiag.callbacks.restore_raw_weights import ema_weights
from kerasdiag.callbacks.run_backup import RunBackup, remove_backup
from kerasdiag.callbacks.training_doctor import TrainingDoctor
from kerasdiag.checks.lr_range import with_auto_lr
from kerasdiag.checks.sanity.stages import run_sanity_stages
from kerasdiag.checks.weights import class_weight_setting
from kerasdiag.config.schema import loss_task
from kerasdiag.core.errors import ConfigError, KerasdiagError
from kerasdiag.core.faults import kill_point, kill_target
from kerasdiag.core.io import atomic_path, write_json_atomic, write_text_atomic
from kerasdiag.core.metrics import metric_mode
from kerasdiag.core.rundir import RunLayout, claim_run_dir, read_metrics_csv
from kerasdiag.core.timings import StageClock
from kerasdiag.data import Dataset, load_dataset, make_tf_dataset
from kerasdiag.data.pipeline import split_batches, training_batches
from kerasdiag.data.stream import StreamedDataset, examples, file_read_errors
from kerasdiag.diagnosis import confusion_summary, diagnose, failed_stages
from kerasdiag.diagnosis.advice import config_terms, source_inputs
from kerasdiag.modeling.distribute import get_strategy, worker_count
from kerasdiag.modeling.factory import build_model, model_summary_text, steps_per_epoch
from kerasdiag.modeling.losses import predicted_classes
from kerasdiag.modeling.optimizers import build_schedule
from kerasdiag.report import build_report
from kerasdiag.training.test_time import flip_averaged_scores


def seed_everything(trainer_cfg: Any) -> None:
    """Seed Python, NumPy and TensorFlow; with ``deterministic`` also make TF ops deterministic.

    Everything random in a run draws from these seeds or from ``data.seed``: weight init and
    dropout (Keras' global seed, set again by :func:`build_model`), the tf.data shuffle and the
    stateless augmentation (``data.seed``), the splits (NumPy generators seeded by
    ``data.seed``). With ``trainer.deterministic=true`` two runs of one config on one machine
    write identical metrics.csv files.
    """
    keras.utils.set_random_seed(int(trainer_cfg.seed))
    if trainer_cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


@dataclass
class RunCallbacks:
    """The callbacks of one training run, by role, and all of them in ``fit``'s order.

    What the pipeline reads after ``fit`` (the metrics.csv rows, the best checkpoint, the NaN
    stop's record, TensorBoard's files to close) is a field here, configured when it is built.
    """

    nan_stop: NaNStop
    metrics: MetricsCSV
    checkpoint: BestCheckpoint
    tensorboard: EpochTensorBoard | None
    all: list[keras.callbacks.Callback]


def run_callbacks(
    cfg: DictConfig,
    run_dir: Path,
    data: Dataset,
    *,
    keep_backup: bool = False,
    every_epoch: bool = False,
) -> RunCallbacks:
    """The callbacks every run gets: schedule, metrics.csv, best checkpoint, TensorBoard, ...

    ``NaNStop`` comes first: a NaN/Inf batch leaves ``fit`` before any callback records the
    broken epoch. ``RunBackup`` (``trainer.resume``) comes last: each epoch is backed up after
    its metrics.csv row and checkpoint are written, with EarlyStopping's and the plateau
    schedule's progress; ``keep_backup`` keeps it after ``fit`` (the caller removes it when
    its run is complete, so a process killed after ``fit`` does not train again).
    ``every_epoch`` keeps every epoch's checkpoint besides the best.
    """
    _, schedule = build_schedule(
        float(cfg.optimizer.lr), cfg.schedule, steps_per_epoch(cfg, data), int(cfg.trainer.epochs)
    )
    monitors, doctor = watch_callbacks(cfg, run_dir, data)
    # The learning-rate monitor's record, when the run has one, is the rate metrics.csv,
    # the NaN stop and the doctor report: one reading of it per step.
    nan_stop = NaNStop(base_lr=float(cfg.optimizer.lr), learning_rate=monitors.learning_rate)
    metrics = MetricsCSV(
        run_dir / RunLayout.METRICS,
        resume=bool(cfg.trainer.resume),
        learning_rate=monitors.learning_rate,
    )
    checkpoint = BestCheckpoint(
        run_dir / RunLayout.CHECKPOINTS,
        monitor=cfg.trainer.checkpoint_monitor,
        every_epoch=every_epoch,
    )
    if monitors.curves is not None:
        # the run directory's curves mark the kept epoch, as the report's do
        monitors.curves.kept_epoch = lambda: checkpoint.best_epoch
    # The callbacks whose progress a resumed run needs back (ReduceLROnPlateau, EarlyStopping).
    stateful: list[keras.callbacks.Callback] = list(schedule)
    es = cfg.trainer.early_stopping
    if es.enabled:
        stateful.append(
            keras.callbacks.EarlyStopping(
                monitor=es.monitor,
                mode=metric_mode(es.monitor),  # as BestCheckpoint: one notion of "best"
                patience=int(es.patience),
                restore_best_weights=bool(es.restore_best_weights),
                verbose=1,
            )
        )
    tensorboard = None
    if cfg.trainer.tensorboard:
        tensorboard = EpochTensorBoard(
            log_dir=str(run_dir / RunLayout.TENSORBOARD), write_graph=False
        )
    early_stopping = stateful[len(schedule) :]
    callbacks = [nan_stop, *schedule, metrics, checkpoint, *early_stopping]
    callbacks += [tensorboard] if tensorboard is not None else []
    callbacks += [*monitors.all, *([doctor] if doctor is not None else [])]
    if cfg.trainer.resume:
        # the monitors' and the doctor's background writes of an epoch land before its backup
        callbacks.append(WritesBarrier())
        backup = RunBackup(
            run_dir / RunLayout.BACKUP, track=stateful, delete_on_train_end=not keep_backup
        )
        callbacks.append(backup)
    callbacks.append(StopOnSignal.after(callbacks))  # SIGTERM/SIGINT: back up, leave fit
    return RunCallbacks(nan_stop, metrics, checkpoint, tensorboard, callbacks)


def training_callbacks(
    cfg: DictConfig, run_dir: Path, data: Dataset, *, keep_backup: bool = False
) -> list[keras.callbacks.Callback]:
    """:func:`run_callbacks`' list, for a caller that only passes them to ``fit``."""
    return run_callbacks(cfg, run_dir, data, keep_backup=keep_backup).all


# Training examples the kept model is scored on in inference mode, as the test split is.
TRAIN_SAMPLE = 1000


def watch_callbacks(
    cfg: DictConfig, run_dir: Path, data: Dataset
) -> tuple[Monitors, TrainingDoctor | None]:
    """The monitors ``conf/monitors/`` turns on and the TrainingDoctor.

    The monitors go into ``fit``'s callback list themselves; the doctor comes after them
    and judges what they measure (and reads the learning-rate monitor's record), so
    nothing is computed twice; what no monitor measures it probes itself on the probe
    batch. Its findings go to ``doctor.json``. Returns the monitors and the doctor (None
    when ``monitors.doctor`` is off).
    """
    monitors = monitor_callbacks(
        cfg.monitors,
        run_dir,
        examples(data),
        steps_per_epoch=steps_per_epoch(cfg, data),
        epochs=int(cfg.trainer.epochs),
    )
    if not cfg.monitors.doctor:
        return monitors, None
    x, y = probe_batch(examples(data), int(cfg.monitors.probe_size))
    doctor = TrainingDoctor(
        x,
        y,
        monitors=[*monitors.measured, *filter(None, [monitors.learning_rate])],
        stop_on=list(cfg.monitors.doctor_stop_on),
        thresholds=dict(cfg.monitors.doctor_thresholds),
        budget=float(cfg.monitors.doctor_budget),
        path=run_dir / RunLayout.DOCTOR,
        bayes_error=cfg.bayes_error,
        # the fixes name this recipe's config keys, and augmentation only for images
        advice=config_terms(cfg.model, source_inputs(cfg.data.name)),
        batch_size=int(cfg.data.batch_size),
    )
    # The diagnosis judges the curves at the kept epoch (finish_run), with the kept model's
    # training accuracy in inference mode (evaluate_train_sample): the doctor need not.
    doctor.judge_curves = False
    return monitors, doctor


def fit(
    cfg: DictConfig,
    model: keras.Model,
    data: Dataset,
    callbacks: list[keras.callbacks.Callback],
) -> keras.callbacks.History:
    """``model.fit`` on the tf.data pipelines of the training and validation splits.

    The training order of each epoch is a function of ``data.seed`` and the epoch; a resumed
    fit starts the stream at the backup's epoch, so it trains on what the uninterrupted run
    would have.
    """
    start = next((cb.resume_epoch() for cb in callbacks if isinstance(cb, RunBackup)), 0)
    stream = dict(epochs=int(cfg.trainer.epochs), first_epoch=start,
                  augment_cfg=cfg.data.augment, seed=int(cfg.data.seed))  # fmt: skip
    strategy = model.distribute_strategy
    if isinstance(data, StreamedDataset) and worker_count(strategy) > 1:
        # Each worker reads its own shard of the files (not every file, keeping 1/N of the
        # batches, as Keras' automatic sharding of a dataset it cannot split by file does).
        def shard(context: tf.distribute.InputContext) -> tf.data.Dataset:
            batch = context.get_per_replica_batch_size(int(cfg.data.batch_size))
            return data.training_batches(batch, input_context=context, **stream)

        train_ds = strategy.distribute_datasets_from_function(shard)
    else:
        train_ds = training_batches(data, int(cfg.data.batch_size), **stream)
    val_ds = split_batches(data, "val", int(cfg.data.batch_size))
    with warnings.catch_warnings(), file_read_errors(data):
        if cfg.monitors.doctor:  # the doctor judges and advises; the monitors only measure
            warnings.simplefilter("ignore", MonitorWarning)
        return model.fit(
            train_ds,
            steps_per_epoch=steps_per_epoch(cfg, data),  # one iterator across the epochs
            validation_data=val_ds,
            epochs=int(cfg.trainer.epochs),
            callbacks=callbacks,
            verbose=int(cfg.trainer.verbose),
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            class_weight=run_class_weight(cfg, data),
        )


def keep_best_model(
    model: keras.Model,
    checkpoint: BestCheckpoint,
    run_dir: Path,
    last_epoch: int,
    rows: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Put the weights of the run's best checkpoint into ``model``; say which file they are.

    The one notion of "best" in a run is ``trainer.checkpoint_monitor`` (early stopping
    restores the same epoch), and the model whose test score a run reports is the file on
    disk. When no epoch ever had a finite score the last weights are saved as
    ``checkpoints/final-epochNNN.keras`` and reported instead. Returns the fields
    ``test_metrics.json`` adds to the scores: ``model`` (path relative to the run
    directory), ``weights_epoch`` (from 1), ``monitor`` and ``monitor_value``:
    metrics.csv's value of that epoch when ``rows`` (its rows) has it, the exact number
    logged, also after a resume (a checkpoint found on disk names its value rounded).
    """
    path = checkpoint.best_path
    if path is None or not path.is_file():
        path = checkpoint.directory / f"final-epoch{last_epoch:03d}.keras"
        with atomic_path(path) as tmp:
            model.save(tmp)
        epoch, value = last_epoch, None
    else:
        model.load_weights(path)
        epoch, value = checkpoint.best_epoch, checkpoint.best
        value = (rows or {}).get(epoch, {}).get(checkpoint.monitor, value)
    return {
        "model": str(path.relative_to(run_dir)),
        "weights_epoch": epoch,
        "monitor": checkpoint.monitor,
        "monitor_value": value,
    }


def evaluate_test(
    cfg: DictConfig, model: keras.Model, data: Dataset, *, raw: bool = True, ema: bool | None = None
) -> dict[str, Any]:
    """Loss and accuracy on the held-out test split.

    With ``optimizer.use_ema`` (or ``ema=True``) the moving average of the weights is scored
    too, under ``"ema"``, next to the raw weights' numbers (``raw=False``: only it). With
    ``trainer.test_time_flip`` the flip-averaged scores go under ``"flip"``
    (:mod:`kerasdiag.training.test_time`).
    """
    scores: dict[str, Any] = {}
    if raw:
        test_ds = split_batches(data, "test", int(cfg.data.batch_size))
        with file_read_errors(data):
            evaluated = model.evaluate(test_ds, verbose=0, return_dict=True)
        scores = {k: float(v) for k, v in evaluated.items()}
        if cfg.trainer.get("test_time_flip"):
            with file_read_errors(data):
                scores["flip"] = flip_averaged_scores(model, test_ds, cfg.loss)
    if cfg.optimizer.use_ema if ema is None else ema:
        if isinstance(data, StreamedDataset):
            both = evaluate_with_ema(
                model, split_batches(data, "test", int(cfg.data.batch_size)), None
            )
        else:
            both = evaluate_with_ema(model, data.x_test, data.y_test, int(cfg.data.batch_size))
        scores["ema"] = both["ema"]
    return scores


def evaluate_train_sample(cfg: DictConfig, model: keras.Model, data: Dataset) -> dict[str, Any]:
    """The model's loss and accuracy on ``TRAIN_SAMPLE`` training examples, scored as the
    test split is (inference mode): ``train_loss``, ``train_accuracy``, ``train_examples``.

    The training side of the bias/variance table: ``fit``'s own training accuracy is a
    running mean in training mode over an epoch of changing weights (with BatchNorm, far
    above what the same weights score in inference mode).
    """
    sample = examples(data)  # a streamed set's bounded sample: spread over its training split
    x, y = sample.x_train[:TRAIN_SAMPLE], sample.y_train[:TRAIN_SAMPLE]
    dataset = make_tf_dataset(x, y, int(cfg.data.batch_size))
    scores = model.evaluate(dataset, verbose=0, return_dict=True)
    out: dict[str, Any] = {f"train_{k}": float(v) for k, v in scores.items()}
    out["train_examples"] = len(y)
    return out


def write_test_confusion(cfg: DictConfig, model: keras.Model, data: Dataset, path: Path) -> None:
    """The kept model's confusion matrix and per-class accuracy on the test split; for
    multi-label data each label's accuracy, for regression each target's errors
    (:func:`per_output_summary`)."""
    test_ds = split_batches(data, "test", int(cfg.data.batch_size))  # streamed: in file order
    outputs = model.predict(test_ds, verbose=0)
    names = list(data.class_names) or [str(i) for i in range(data.num_classes)]
    task = loss_task(cfg.loss.name)
    if task != "classification":
        threshold = 0.0 if cfg.loss.from_logits else 0.5
        y = data.y_test
        if (
            getattr(data, "target_std", None) is not None
        ):  # standardised targets: errors in their own units
            y = y * data.target_std + data.target_mean
            outputs = outputs * data.target_std + data.target_mean
        write_json_atomic(path, per_output_summary(task, y, outputs, names, threshold))
        return
    predicted = predicted_classes(outputs, cfg.loss)
    write_json_atomic(path, confusion_summary(data.y_test, predicted, names))


def per_output_summary(
    task: str, y_true: Any, outputs: Any, names: list[str], threshold: float = 0.0
) -> dict[str, Any]:
    """The test split output by output: a multi-label model's accuracy and true share per
    label (a logit above ``threshold`` is on) and its exact match; a regression model's MAE,
    RMSE and R^2 (1 - squared error / the targets' variance) per target."""
    y = np.asarray(y_true, np.float64).reshape(len(outputs), -1)
    out = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    if task == "multilabel":
        right = (out > threshold) == (y > 0.5)
        return {"task": task, "labels": names, "examples": len(y),
                "per_label_accuracy": right.mean(0).tolist(),
                "positive_share": (y > 0.5).mean(0).tolist(),
                "exact_match": float(right.all(axis=1).mean())}  # fmt: skip
    error = out - y
    variance = np.where(y.var(0) > 0, y.var(0), np.nan)
    return {"task": task, "targets": names, "examples": len(y),
            "mae": np.abs(error).mean(0).tolist(),
            "rmse": np.sqrt((error**2).mean(0)).tolist(),
            "r2": [None if not np.isfinite(r) else float(r)
                   for r in 1.0 - (error**2).mean(0) / variance]}  # fmt: skip


def save_ema_model(model: keras.Model, path: Path) -> None:
    """Save the model with the optimizer's moving average of its weights."""
    with ema_weights(model), atomic_path(path) as tmp:
        model.save(tmp)


def finish_run(cfg: DictConfig, run_dir: Path, clock: StageClock | None = None) -> None:
    """Diagnose the run from its files (``diagnosis.json``), write ``report.html``, then the
    completion marker (``RunLayout.COMPLETE``): from then on the directory is finished.

    Called after every training, also one stopped by a NaN or a failed sanity stage: the
    report is where a person reads what happened. A rerun of a run killed after its
    diagnosis keeps the ``diagnosis.json`` written then (the diagnosis reads the run's
    files only, so it would be the same) and writes the report; one killed after the report
    keeps it too and writes the marker. ``clock`` times the diagnosis and the report.
    """
    clock = clock or StageClock(run_dir / RunLayout.TIMINGS)
    diagnosis = run_dir / RunLayout.DIAGNOSIS
    with clock.stage("diagnosis"):
        findings = diagnose(run_dir, write=not diagnosis.is_file())
    kill_point("diagnosis")
    print("diagnosis:" if findings else "diagnosis: no symptoms found")
    for finding in findings:
        print(f"  {finding.severity}: {finding}")
    report = run_dir / RunLayout.REPORT
    if not _written_after(report, diagnosis):
        # None yet, or one built before the run ended (``scripts/report.py`` on an
        # interrupted run): stale, and it would list itself among the run's files.
        report.unlink(missing_ok=True)
        with clock.stage("report"):
            report = build_report(run_dir)
    # else: written by a process killed before the marker; the files it shows are final
    kill_point("report")
    write_text_atomic(run_dir / RunLayout.COMPLETE, "")
    print(f"report: {report}")


def _written_after(path: Path, other: Path) -> bool:
    """Whether ``path`` exists and was last written no earlier than ``other``."""
    try:
        return path.stat().st_mtime_ns >= other.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def run_sanity(cfg: DictConfig, model: keras.Model, data: Dataset, run_dir: Path) -> list:
    """The checks before training (gradient check, initial loss, regularization, overfit).

    They work on copies: ``model`` trains afterwards exactly as it would without them. A
    resumed run already has its ``sanity.json`` and does not repeat them.
    """
    if (run_dir / RunLayout.SANITY).exists():
        return []
    return run_sanity_stages(
        cfg,
        model,
        examples(data),
        run_dir,
        lambda **overrides: build_model(cfg, data, **overrides),
        class_weight=run_class_weight(cfg, data),
    )


def run_class_weight(cfg: DictConfig, data: Dataset) -> dict[int, float] | None:
    """``trainer.class_weight`` as ``fit`` takes it, ``balanced`` counted on the whole
    training split (a streamed one's labels too); a bad one ends the run naming the key."""
    setting = cfg.trainer.get("class_weight")
    if isinstance(setting, DictConfig):
        setting = OmegaConf.to_container(setting)
    try:
        return class_weight_setting(setting, data.y_train, int(data.num_classes))
    except ValueError as error:
        raise ConfigError("trainer.class_weight", setting, str(error)) from None


def prepare_run(cfg: DictConfig, run_dir: Path, data: Dataset | None = None) -> Dataset:
    """How every run starts, in its claimed directory: seed, load the data (unless given),
    write ``config.yaml`` (what a resume is compared with) and ``data.json``."""
    seed_everything(cfg.trainer)
    # Before any TensorFlow work (a streamed set's pass runs tf.data): a multi-worker
    # strategy configures its collective ops at program start-up or not at all.
    get_strategy(cfg.trainer.strategy)
    if data is None:
        data = load_dataset(cfg.data, loss_task(cfg.loss.name))
    run_class_weight(cfg, data)  # refused here, before this run records anything
    if cfg.trainer.get("test_time_flip") and len(data.input_shape) != 3:
        raise ConfigError("trainer.test_time_flip", True, "mirrors images (height, width, "
                          f"channels), and data={cfg.data.name} gives examples of shape "
                          f"{tuple(data.input_shape)}")  # fmt: skip
    # A resumed run keeps the files its first process wrote (the config may differ in
    # display keys only, and the data is the same): nothing recorded is rewritten.
    if isinstance(data, StreamedDataset):
        # The splits decided by the first process of this run, read back on resume; else
        # the streaming pass (bad files, normalisation), then its record.
        record = run_dir / RunLayout.DATA_SPLITS
        if record.is_file():
            data.adopt(record)
        else:
            data.prepare()
            data.write_record(record)
    if not (run_dir / RunLayout.CONFIG).is_file():
        write_text_atomic(run_dir / RunLayout.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    if not (run_dir / RunLayout.DATA).is_file():
        write_json_atomic(run_dir / RunLayout.DATA, data.summary())
    return data


def run_training(
    cfg: DictConfig,
    run_dir: str | Path,
    *,
    data: Dataset | None = None,
    sanity: bool = True,
    every_epoch: bool = False,
    startup_seconds: float | None = None,
) -> dict[str, Any]:
    """Run one whole training recipe in ``run_dir`` and return its summary.

    ``data`` reuses splits already loaded (ensemble members share theirs); ``sanity=False``
    skips the pre-training checks; ``every_epoch`` keeps every epoch's checkpoint besides the
    best (checkpoint ensembles). Each stage's seconds go to ``timings.jsonl``, after
    ``startup_seconds`` (what the process spent before the run: imports, config, data) when
    given. With ``optimizer.use_ema`` the moving average of the weights
    is saved as ``ema.keras`` too.

    Writes ``config.yaml``, ``data.json``, ``summary.txt``, ``sanity.json``,
    ``gradcheck.json``, ``metrics.csv``, ``checkpoints/``, ``tensorboard/``, the monitors'
    CSVs and PNGs, ``doctor.json``, ``test_metrics.json`` (the scores of the best checkpoint,
    which it names), ``test_confusion.json``, ``diagnosis.json`` and ``report.html`` there.

    The directory is locked for this process and must be new, or hold an interrupted run of
    the same config: with ``trainer.resume`` (the default) that run continues from its last
    completed epoch (``backup/``, removed once the run is written). A NaN/Inf loss ends the
    run with :class:`~kerasdiag.callbacks.nan_stop.NonFiniteLossError` (exit code 3) and a
    ``nan.json``; metrics.csv and the best checkpoint so far stay.
    """
    run_dir = Path(run_dir)
    with claim_run_dir(run_dir, cfg):
        started = time.time()
        clock = StageClock(run_dir / RunLayout.TIMINGS)
        if startup_seconds is not None:
            clock.hold("start-up", startup_seconds)  # written with the first completed stage
        nan_record = run_dir / RunLayout.NAN
        if nan_record.is_file():
            # A NaN-stopped run killed before its report: write it, and end as that run did.
            finish_run(cfg, run_dir, clock)
            raise NonFiniteLossError(json.loads(nan_record.read_text()))
        if not (run_dir / RunLayout.TEST_METRICS).is_file():
            train_and_test(
                cfg, run_dir, data=data, sanity=sanity, every_epoch=every_epoch, clock=clock
            )
        # else: trained and tested by an earlier process, killed before its report
        remove_backup(run_dir / RunLayout.BACKUP)
        finish_run(cfg, run_dir, clock)

        # From the files, not fit's history: a resumed run's history lacks earlier epochs.
        rows = read_metrics_csv(run_dir / RunLayout.METRICS)
        test_metrics = json.loads((run_dir / RunLayout.TEST_METRICS).read_text())
        summary = {
            "recipe": cfg.recipe,
            "run_dir": str(run_dir),
            "epochs_run": len(rows),
            "best_val_accuracy": _best(
                [r["val_accuracy"] for r in rows.values() if "val_accuracy" in r]
            ),
            "test": test_metrics,
            "sanity_failed": failed_sanity_stages(run_dir),
            "seconds": round(time.time() - started, 1),
        }
        print_final_summary(summary)
        return summary


def train_and_test(
    cfg: DictConfig,
    run_dir: Path,
    *,
    data: Dataset | None = None,
    sanity: bool = True,
    every_epoch: bool = False,
    clock: StageClock | None = None,
) -> None:
    """The recorded steps of a run up to its test: sanity (``sanity.json``), the epochs
    (``metrics.csv``, the monitors, ``backup/``), the test (``test_confusion.json``, then
    ``test_metrics.json``, the step's record). Each step a killed process had recorded is
    not done again: sanity is skipped, ``fit`` resumes after the backed-up epoch (or, all
    epochs done, trains none and puts the final weights back). A NaN/Inf loss or a failed
    ``sanity.fail_fast`` stage writes the report and raises. ``clock`` times each step.
    """
    clock = clock or StageClock(run_dir / RunLayout.TIMINGS)
    with clock.stage("data"):
        data = prepare_run(cfg, run_dir, data)
    if cfg.optimizer.lr == "auto":  # the learning-rate range test's suggestion
        with clock.stage("learning-rate range test"):
            cfg = with_auto_lr(cfg, examples(data), run_dir, run_class_weight(cfg, data))
    with clock.stage("model"):
        model = build_model(cfg, data)
        if not (run_dir / RunLayout.SUMMARY).is_file():
            write_text_atomic(run_dir / RunLayout.SUMMARY, model_summary_text(model))
    try:
        if sanity:
            with clock.stage("sanity"):
                run_sanity(cfg, model, data, run_dir)
    except KerasdiagError:  # sanity.fail_fast: the report shows the failed stage
        finish_run(cfg, run_dir, clock)
        raise
    kill_point("sanity")

    with clock.stage("training"):
        callbacks = run_callbacks(cfg, run_dir, data, keep_backup=True, every_epoch=every_epoch)
        try:
            fit(cfg, model, data, [*callbacks.all, *kill_point_callbacks()])
        except NonFiniteLossError as exc:
            error = record_nan_stop(run_dir, exc.record, callbacks)
            finish_run(cfg, run_dir, clock)
            raise error from None
    record_watch_costs(clock, callbacks.all)
    kill_point("fit")
    test_started = time.perf_counter()
    rows = callbacks.metrics.rows
    ema_scores = None
    if cfg.optimizer.use_ema:  # the average at the end of training, as ema.keras holds
        save_ema_model(model, run_dir / RunLayout.EMA_MODEL)
        ema_scores = evaluate_test(cfg, model, data, raw=False)["ema"]
    kept = keep_best_model(model, callbacks.checkpoint, run_dir, max(rows, default=0), rows)
    test_metrics = evaluate_test(cfg, model, data, ema=False)
    test_metrics.update(evaluate_train_sample(cfg, model, data))
    broken = first_non_finite(rows, test_metrics)  # a NaN that NaNStop did not raise on
    if broken is not None:
        record = callbacks.nan_stop.record_after_fit(*broken)
        error = record_nan_stop(run_dir, record, callbacks)
        finish_run(cfg, run_dir)
        raise error from None
    if ema_scores is not None:
        test_metrics.update(ema=ema_scores, ema_model=RunLayout.EMA_MODEL)
    test_metrics.update(kept)
    # test_metrics.json last: its presence says the test step is recorded whole
    write_test_confusion(cfg, model, data, run_dir / RunLayout.TEST_CONFUSION)
    kill_point("test-scored")
    write_json_atomic(run_dir / RunLayout.TEST_METRICS, test_metrics)
    clock.record("test", time.perf_counter() - test_started)
    kill_point("test")


class _KillPoints(keras.callbacks.Callback):
    """Fault-injection hook for tests (:mod:`kerasdiag.core.faults`): ``epoch:<n>`` kills
    at the boundary after ``n`` epochs (their files and backup written), ``step:<n>``
    before training step ``n`` (from 0, counted over the run's epochs)."""

    _epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        kill_point("epoch", epoch)

    def on_train_batch_begin(self, batch, logs=None):
        kill_point("step", self._epoch * int(self.params.get("steps") or 0) + batch)


def kill_point_callbacks() -> list[keras.callbacks.Callback]:
    """The epoch and step kill points, only while ``KERASDIAG_KILL_AT`` is set (a test):
    otherwise none, so a normal ``fit`` has no extra batch hook."""
    target = kill_target()
    return [_KillPoints()] if target is not None and target[0] in ("epoch", "step") else []


def record_watch_costs(clock: StageClock, callbacks: list[keras.callbacks.Callback]) -> None:
    """The monitors' probe passes and the doctor's own measurements, as parts of training."""
    probes = {
        id(cb.probe): cb.probe
        for cb in callbacks
        if isinstance(getattr(cb, "probe", None), ProbeBatch)
    }
    if probes:
        clock.record("training: monitors' probes", sum(p.seconds for p in probes.values()))
    for cb in callbacks:
        if isinstance(cb, TrainingDoctor):
            clock.record("training: doctor", cb.probe_seconds)


def record_nan_stop(
    run_dir: Path, record: dict[str, Any], callbacks: RunCallbacks
) -> NonFiniteLossError:
    """After a NaN/Inf stop: write ``nan.json``, flush TensorBoard, return the error to raise.

    The run is over (its report, written next, finishes it), so its backup is removed; metrics.csv
    keeps the completed epochs and ``checkpoints/`` the best model before the failure.
    """
    if callbacks.tensorboard is not None:
        callbacks.tensorboard.on_train_end()  # fit left without calling it: close the files
    best = callbacks.checkpoint.best_path
    record = {
        **record,
        "checkpoint": None if best is None else str(best),
        "record_file": str(run_dir / RunLayout.NAN),
    }
    write_json_atomic(run_dir / RunLayout.NAN, record)
    remove_backup(run_dir / RunLayout.BACKUP)
    return NonFiniteLossError(record)


def _best(values: list[float] | None) -> float | None:
    return None if not values else float(np.nanmax(values))


def failed_sanity_stages(run_dir: Path) -> list[str]:
    """The sanity stages that failed in this run (``sanity.json``), in order."""
    path = Path(run_dir) / RunLayout.SANITY
    return failed_stages(json.loads(path.read_text())) if path.is_file() else []


def print_final_summary(summary: dict[str, Any]) -> None:
    """The run's last lines: epochs, the kept model and its test score, failed sanity checks."""
    test = summary["test"]
    kept = ""
    if test.get("weights_epoch") is not None:
        value = test.get("monitor_value")
        score = "" if value is None else f" ({test.get('monitor')} {value:.4f})"
        kept = f" | kept epoch {test['weights_epoch']}{score}"
    failed = summary.get("sanity_failed") or []
    warning = f" | FAILED sanity check: {', '.join(failed)}" if failed else ""
    model = f"\nmodel: {Path(summary['run_dir']) / test['model']}" if test.get("model") else ""
    scores = ", ".join(
        f"test {name} {test[name]:.4f}" for name in SUMMARY_SCORES if test.get(name) is not None
    )
    if isinstance(test.get("flip"), dict):
        scores += f" (flip-averaged {test['flip']['accuracy']:.4f})"
    print(
        f"\n{summary['recipe']}: {summary['epochs_run']} epochs in {summary['seconds']} s"
        f"{kept} | {scores or 'no test score'}{warning}{model}\n"
        f"run directory: {summary['run_dir']}"
    )


# The test scores the run's last line shows, those the task has (regression: no accuracy).
SUMMARY_SCORES = ("loss", "accuracy", "label_accuracy", "mae", "rmse")
