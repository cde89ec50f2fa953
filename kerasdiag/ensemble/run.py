"""``run_ensemble``: gather the members an ``ensemble`` config asks for, join them, score.

Run directory layout::

    config.yaml, data.json
    members/seed<N>/          one training each (seeds, checkpoints, ema), made with the
                              pipeline's own build_model / training_callbacks / fit /
                              evaluate_test: metrics.csv, checkpoints/, test_metrics.json
                              (and ema.keras for ensemble=ema)
    ensemble.keras            the joined model (loads with safe_mode=True)
    ensemble.json             each member's test score, the best single score, the ensemble's

The run directory and every member folder follow the run-directory rules of
:mod:`kerasdiag.core.rundir`: locked while in use, resumed only with the same config. A member
folder holding ``test_metrics.json`` is finished and is reused as it is, so an ensemble
interrupted after some members (``trainer.resume``, the default) trains only the rest, and an
interrupted member continues from its last epoch (``backup/``). A member whose loss became
NaN/Inf stops the ensemble with its ``nan.json`` (exit code 3).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from kerasdiag.callbacks.best_checkpoint import find_best_checkpoint
from kerasdiag.config.schema import loss_task, validate_ensemble_config
from kerasdiag.core.errors import DataError, KerasdiagError
from kerasdiag.core.io import atomic_path, write_json_atomic
from kerasdiag.core.metrics import metric_mode
from kerasdiag.core.rundir import FINISHED, RunLayout, claim_run_dir, run_dir_status
from kerasdiag.data import Dataset
from kerasdiag.data.pipeline import split_batches
from kerasdiag.ensemble.model import (
    build_ensemble,
    load_member,
    member_signature,
    predict_probabilities,
)
from kerasdiag.ensemble.selection import (
    CheckpointScore,
    best_checkpoints,
    source_checkpoints,
)
from kerasdiag.modeling.safe_load import load_model_safely
from kerasdiag.training.pipeline import prepare_run, run_training

COMBINATIONS = {
    "classification": "mean of the members' softmax probabilities (multiclass-hinge scores "
    "pass through the same softmax; members ending in a softmax are averaged as they are)",
    "multilabel": "mean of the members' per-label sigmoid probabilities",
    "regression": "mean of the members' predicted values",
}
COMBINATION = COMBINATIONS["classification"]
# The test score members and ensemble are compared on, by task, and the direction of "better".
PRIMARY = {"classification": ("test_accuracy", 1), "multilabel": ("test_accuracy", 1),
           "regression": ("test_rmse", -1)}  # fmt: skip


@dataclass(frozen=True)
class Member:
    """One model of an ensemble: a ``.keras`` file and, when known, its validation score."""

    name: str
    path: Path
    val_metric: str | None = None
    val_score: float | None = None


def run_ensemble(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Build, save and score the ensemble ``cfg.ensemble`` describes; return its summary.

    Example:
        >>> cfg = load_config(["ensemble=seeds", "ensemble.members=3"])  # doctest: +SKIP
        >>> run_ensemble(cfg, "outputs/seeds")["ensemble"]["test_accuracy"]  # doctest: +SKIP
    """
    validate_ensemble_config(cfg)
    run_dir = Path(run_dir)
    with claim_run_dir(run_dir, cfg):
        started = time.time()
        data = prepare_run(cfg, run_dir)

        members = MEMBER_SOURCES[cfg.ensemble.name](cfg, run_dir, data)
        report = assemble(members, data, run_dir, batch_size=int(cfg.data.batch_size),
                          task=loss_task(cfg.loss.name))  # fmt: skip
        report = {"kind": cfg.ensemble.name, **report, "seconds": round(time.time() - started, 1)}
        write_json_atomic(run_dir / RunLayout.ENSEMBLE, report)
        print_ensemble_summary(report, run_dir)
        return report


def train_member(
    cfg: DictConfig,
    member_dir: Path,
    data: Dataset,
    every_epoch: bool = False,
    sanity: bool = True,
) -> None:
    """Train one member in ``member_dir`` exactly as a single run trains, then test it.

    ``every_epoch`` keeps a checkpoint of every epoch (checkpoint ensembles). With
    ``optimizer.use_ema`` the moving average of the weights is saved as ``ema.keras``.
    ``sanity`` runs the pre-training checks (the ensembles run them for their first member
    only: the others differ by seed alone).
    """
    if run_dir_status(member_dir) == FINISHED:
        if (member_dir / RunLayout.NAN).exists():
            raise KerasdiagError(
                f"member {member_dir} stopped on a NaN/Inf loss ({RunLayout.NAN}); fix the recipe "
                "(e.g. a lower optimizer.lr) and start the ensemble in a new directory"
            )
        print(f"{member_dir.name}: finished already, reusing it")
        return
    run_training(cfg, member_dir, data=data, sanity=sanity, every_epoch=every_epoch)


def seed_members(cfg: DictConfig, run_dir: Path, data: Dataset) -> list[Member]:
    """``members`` trainings, seeds ``trainer.seed + i``; each gives its best checkpoint."""
    members = []
    for i, (member_cfg, member_dir) in enumerate(_trainings(cfg, run_dir, cfg.ensemble.members)):
        train_member(member_cfg, member_dir, data, sanity=i == 0)
        members.append(_best_checkpoint_member(cfg, member_dir, member_dir.name))
    return members


def checkpoint_members(cfg: DictConfig, run_dir: Path, data: Dataset) -> list[Member]:
    """One training keeping every epoch; the ``members`` best-scored epochs."""
    [(member_cfg, member_dir)] = _trainings(cfg, run_dir, 1)
    train_member(member_cfg, member_dir, data, every_epoch=True)
    epochs = list((member_dir / RunLayout.CHECKPOINTS).glob("epoch*.keras"))
    chosen = best_checkpoints(epochs, int(cfg.ensemble.members))
    if len(chosen) < 2:
        raise DataError(
            f"{member_dir / 'checkpoints'} holds {len(chosen)} scored epoch checkpoint(s); "
            f"a checkpoint ensemble needs 2 or more (did early stopping end the run early?)"
        )
    return [_scored_member(f"{member_dir.name}/{c.label}", c) for c in chosen]


def ema_members(cfg: DictConfig, run_dir: Path, data: Dataset) -> list[Member]:
    """``members`` trainings with a weight moving average; each adds best + EMA models."""
    members = []
    ema_cfg = OmegaConf.merge(cfg, {"optimizer": {"use_ema": True}})
    for i, (member_cfg, member_dir) in enumerate(
        _trainings(ema_cfg, run_dir, cfg.ensemble.members)
    ):
        train_member(member_cfg, member_dir, data, sanity=i == 0)
        members.append(_best_checkpoint_member(cfg, member_dir, member_dir.name))
        members.append(Member(f"{member_dir.name}/ema", member_dir / RunLayout.EMA_MODEL))
    return members


def topk_members(cfg: DictConfig, run_dir: Path, data: Dataset) -> list[Member]:
    """The ``members`` best-scored checkpoints of a search (``ensemble.source``)."""
    source = Path(str(cfg.ensemble.source)).expanduser()
    chosen = best_checkpoints(source_checkpoints(source), int(cfg.ensemble.members))
    if len(chosen) < 2:
        raise DataError(
            f"{source} holds {len(chosen)} checkpoint(s) with a score in the file name "
            f"(like stage1-trial003-val_accuracy0.9123.keras); an ensemble needs 2 or more"
        )
    return [_scored_member(c.label, c) for c in chosen]


MEMBER_SOURCES = {
    "seeds": seed_members,
    "checkpoints": checkpoint_members,
    "ema": ema_members,
    "topk": topk_members,
}


def assemble(
    members: list[Member],
    data: Dataset,
    run_dir: Path,
    batch_size: int = 256,
    task: str = "classification",
) -> dict[str, Any]:
    """Join the members into ``ensemble.keras``, reload it in safe mode, score all on test.

    The ensemble is scored through the reloaded file, the members one by one through their
    own files: the two paths share no code beyond Keras, so a wrong combination shows.
    ``task`` (the loss's) says what is averaged (``COMBINATIONS``) and scored (``SCORES``).
    """
    models = [load_member(m.path) for m in members]
    for member, model in zip(members, models, strict=True):
        shape, classes = member_signature(model, member.name)
        if shape != tuple(data.input_shape) or classes != data.num_classes:
            raise DataError(
                f"member {member.name} ({member.path}) maps inputs {shape} to {classes} classes, "
                f"but the data ({data.name}) has inputs {tuple(data.input_shape)} and "
                f"{data.num_classes} classes: use the data config the members were trained on"
            )
    path = run_dir / RunLayout.ENSEMBLE_MODEL
    with atomic_path(path) as tmp:
        build_ensemble(models, [m.name for m in members], task=task).save(tmp)
    ensemble = load_model_safely(path)

    # the test split as batches: read from disk for a streamed data set, else its arrays
    test = split_batches(data, "test", batch_size)
    scorer = SCORES[task]
    unit = getattr(data, "target_std", None)  # regression: errors in the targets' units
    rows = []
    for member, model in zip(members, models, strict=True):
        outputs = predict_probabilities(model, test, task=task)
        scores = (
            scorer(outputs, data.y_test) if unit is None else scorer(outputs, data.y_test, unit)
        )
        rows.append(
            {
                "name": member.name,
                "path": _relative(member.path, run_dir),
                "val_metric": member.val_metric,
                "val_score": member.val_score,
                **scores,
            }
        )
    primary, sign = PRIMARY[task]
    second = "test_nll" if task != "regression" else "test_mae"
    best = max(rows, key=lambda r: (sign * r[primary], -r[second]))
    outputs = ensemble.predict(test, verbose=0)
    joined = scorer(outputs, data.y_test) if unit is None else scorer(outputs, data.y_test, unit)
    return {
        "combination": COMBINATIONS[task],
        "model": path.name,
        "test_examples": len(data.y_test),
        "members": rows,
        "best_single": {k: best[k] for k in ("name", primary, second)},
        "ensemble": joined,
        "primary": primary,
        # positive: the ensemble is better than its best member (lower RMSE for regression)
        "gain_over_best_single": sign * (joined[primary] - best[primary]),
    }


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Test accuracy and mean negative log-likelihood of class probabilities."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    picked = probabilities[np.arange(len(labels)), labels]
    return {
        "test_accuracy": float(np.mean(np.argmax(probabilities, axis=-1) == labels)),
        "test_nll": float(-np.mean(np.log(np.maximum(picked, 1e-12)))),
    }


def score_labels(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Multi-label: exact match (every label right at p > 0.5), the share of single labels
    right, and the mean binary cross-entropy per label."""
    p = np.clip(np.asarray(probabilities, np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(labels, np.float64).reshape(p.shape) > 0.5
    right = (p > 0.5) == y
    return {
        "test_accuracy": float(np.mean(right.all(axis=-1))),
        "test_label_accuracy": float(np.mean(right)),
        "test_nll": float(-np.mean(np.where(y, np.log(p), np.log(1 - p)))),
    }


def score_values(outputs: np.ndarray, targets: np.ndarray, unit: Any = 1.0) -> dict[str, float]:
    """Regression: RMSE and MAE, each column's error times ``unit`` (the std its targets were
    divided by: the targets' own units)."""
    out = np.asarray(outputs, np.float64)
    error = (out - np.asarray(targets, np.float64).reshape(out.shape)) * np.asarray(unit)
    return {
        "test_rmse": float(np.sqrt(np.mean(error**2))),
        "test_mae": float(np.mean(np.abs(error))),
    }


SCORES = {"classification": score, "multilabel": score_labels, "regression": score_values}


def print_ensemble_summary(report: dict[str, Any], run_dir: Path) -> None:
    primary = report.get("primary", "test_accuracy")
    second = "test_mae" if primary == "test_rmse" else "test_nll"
    label = primary.replace("_", " ")
    lines = [f"\nensemble={report['kind']}: {len(report['members'])} members"]
    for row in report["members"]:
        lines.append(f"  {row['name']:<28} {label} {row[primary]:.4f}")
    best, joined = report["best_single"], report["ensemble"]
    lines.append(f"  best single ({best['name']}): {best[primary]:.4f}")
    lines.append(
        f"  ensemble: {joined[primary]:.4f} "
        f"(gain {report['gain_over_best_single']:+.4f}), {second.replace('_', ' ')} "
        f"{joined[second]:.4f} vs {best[second]:.4f}"
    )
    lines.append(f"run directory: {run_dir}")
    print("\n".join(lines))


def _trainings(cfg: DictConfig, run_dir: Path, count: int) -> list[tuple[DictConfig, Path]]:
    # Same data split and shuffling for every member (data.seed); only trainer.seed changes,
    # i.e. the initialisation and dropout masks.
    seeds = [int(cfg.trainer.seed) + i for i in range(int(count))]
    return [
        (OmegaConf.merge(cfg, {"trainer": {"seed": s}}), run_dir / RunLayout.MEMBERS / f"seed{s}")
        for s in seeds
    ]


def _best_checkpoint_member(cfg: DictConfig, member_dir: Path, name: str) -> Member:
    monitor = cfg.trainer.checkpoint_monitor
    found = find_best_checkpoint(member_dir / RunLayout.CHECKPOINTS, monitor, metric_mode(monitor))
    if found is None:
        raise DataError(
            f"{member_dir / 'checkpoints'} holds no best-*.keras checkpoint: was "
            f"{monitor} ever finite?"
        )
    path, value = found
    return Member(name, path, monitor, value)


def _scored_member(name: str, checkpoint: CheckpointScore) -> Member:
    return Member(name, checkpoint.path, checkpoint.metric, checkpoint.score)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
