"""``run_search``: what ``scripts/train.py ... tuner=random|coarse_to_fine|hyperband|bayesian``
runs.

One keras-tuner oracle (:func:`~kerasdiag.search.oracle.build_oracle`; coarse to fine is
:class:`~kerasdiag.search.coarse_to_fine.CoarseToFineOracle`, which narrows its ranges between
stages itself), one :class:`~kerasdiag.search.tuner.TrialTuner` running its trials on the one
validation split, in one keras-tuner project (``search/``); then ``search.csv``, ``search.png``
and the HParams dashboard's runs (``tensorboard/search/``). A second run in the same directory
(``hydra.run.dir=SAME``) resumes by keras-tuner's own reload: the finished trials and the
oracle's state come back from ``search/``, an interrupted trial is run again, and the search
goes on from there.

Distributed: the same command on several processes or machines sharing the run directory,
with keras-tuner's variables set. The chief (``KERASTUNER_TUNER_ID=chief``) holds the oracle and
hands out trials; workers (``tuner0``, ``tuner1``, ...) train them::

    export KERASTUNER_ORACLE_IP=127.0.0.1 KERASTUNER_ORACLE_PORT=8000
    KERASTUNER_TUNER_ID=chief  python scripts/train.py tuner=random hydra.run.dir=runs/s1 &
    KERASTUNER_TUNER_ID=tuner0 python scripts/train.py tuner=random hydra.run.dir=runs/s1 &
    KERASTUNER_TUNER_ID=tuner1 python scripts/train.py tuner=random hydra.run.dir=runs/s1

The chief listens on ``KERASTUNER_ORACLE_PORT`` for the whole search; at a stage boundary
its oracle tells workers to wait (``IDLE``) until the stage's last trials are in. Dead
workers, a dead chief and a restarted one are handled by :mod:`kerasdiag.search.distributed` (leases,
heartbeats, deadlines); trials train in worker processes, replaced once their memory grew by
``tuner.worker_memory_mb`` or after ``tuner.trials_per_process`` trials
(:mod:`kerasdiag.search.worker`), locally too, so memory stays flat.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kerasdiag.config.schema import loss_task
from kerasdiag.config.search_space import Param, Stage, validate_search
from kerasdiag.core.errors import KerasdiagError
from kerasdiag.core.faults import kill_point
from kerasdiag.core.io import write_json_atomic, write_text_atomic
from kerasdiag.core.rundir import RunLayout, claim_run_dir
from kerasdiag.data import Dataset, load_dataset
from kerasdiag.diagnosis.symptoms import fix_for
from kerasdiag.modeling.safe_load import load_model_safely
from kerasdiag.search.distributed import serve
from kerasdiag.search.hparams import write_hparams_config
from kerasdiag.search.launch import (
    ENV_ID,
    PrestartedWorkers,
    allow_gpu_memory_growth,
    config_file,
    distributed_role,
)
from kerasdiag.search.oracle import build_oracle
from kerasdiag.search.results import (
    TrialRecord,
    best_records,
    plot_search,
    records_from_trials,
    write_search_csv,
)
from kerasdiag.search.tuner import TrialTuner, read_ledger, trial_config
from kerasdiag.search.worker import WorkerPool, supervise
from kerasdiag.training.pipeline import evaluate_test, seed_everything


def run_search(
    cfg: DictConfig, run_dir: str | os.PathLike, workers: PrestartedWorkers | None = None
) -> dict[str, Any]:
    """Run (or resume) the random / coarse-to-fine search ``cfg.tuner`` describes in ``run_dir``.

    Writes ``trials/`` (one checkpoint per trial, score in the name), ``search/`` (keras-tuner's
    projects, per-trial metrics.csv and config.yaml, ``ledger.jsonl``), ``search.csv``,
    ``search.png`` and ``search_summary.json`` (best trial, its test score). Returns the summary.
    ``workers``: the worker processes :func:`~kerasdiag.search.launch.prestart_workers` started
    for it (a local search with ``tuner.trials_per_process``), else it starts its own.
    """
    started = time.time()
    allow_gpu_memory_growth()  # before TensorFlow touches a device, here and in every worker
    run_dir = Path(run_dir)
    space, stages = validate_search(cfg)
    for stage in stages:  # a stage whose epochs make the config invalid fails now, not per trial
        trial_config(cfg, [], {}, stage.epochs)
    role = distributed_role()
    # A local search locks its directory and resumes only with the same config; the processes
    # of a distributed search share theirs (scripts/train.py checks each one's config).
    with claim_run_dir(run_dir, cfg) if role == "local" else contextlib.nullcontext():
        return _search(cfg, run_dir, role, space, stages, started, workers)


def _search(
    cfg: DictConfig,
    run_dir: Path,
    role: str,
    space: list[Param],
    stages: list[Stage],
    started: float,
    workers: PrestartedWorkers | None,
) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    per_process = int(cfg.tuner.trials_per_process)  # 0: trials train in this process
    # prestarted workers already read their config file: the same one serves the search
    with (
        config_file(cfg) if workers is None else contextlib.nullcontext(workers.cfg_path)
    ) as cfg_path:
        if role == "worker" and per_process:
            # A supervisor: its worker processes train; it needs no TensorFlow of its own.
            supervise(cfg_path, run_dir, per_process, float(cfg.tuner.worker_memory_mb))
            print(f"worker {os.environ.get(ENV_ID)}: no trials left; done", flush=True)
            return {"role": role, "run_dir": str(run_dir)}
        return _run(cfg, run_dir, role, space, stages, started,
                    cfg_path if per_process else None, workers)  # fmt: skip


def _run(
    cfg: DictConfig,
    run_dir: Path,
    role: str,
    space: list[Param],
    stages: list[Stage],
    started: float,
    cfg_path: Path | None,
    workers: PrestartedWorkers | None = None,
) -> dict[str, Any]:
    objective = str(cfg.tuner.objective)
    seed_everything(cfg.trainer)
    # The chief trains nothing; with worker processes, neither does a local search.
    in_process = role == "worker" or (role == "local" and cfg_path is None)
    data = load_dataset(cfg.data, loss_task(cfg.loss.name)) if in_process else None
    if role != "worker":
        write_text_atomic(run_dir / RunLayout.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
        write_hparams_config(run_dir, space, objective)

    tuner = TrialTuner(build_oracle(space, stages, cfg.tuner), cfg=cfg, data=data, space=space,
                       stages=stages, run_dir=run_dir)  # fmt: skip
    try:
        if role == "local" and cfg_path is not None:
            _serve_locally(tuner, cfg, cfg_path, run_dir, workers)
        else:
            tuner.search()
    except RuntimeError as exc:  # keras-tuner's "consecutive failures" stop
        raise _failed_trials_error(tuner.oracle, exc, run_dir) from None
    if role == "worker":
        print(f"worker {os.environ.get(ENV_ID)}: no trials left; done", flush=True)
        return {"role": role, "run_dir": str(run_dir)}
    records = records_from_trials(tuner.oracle.trials.values(), space, stages, run_dir)
    write_search_csv(run_dir / RunLayout.SEARCH_CSV, records, space)
    plot_search(run_dir / RunLayout.SEARCH_FIGURE, records, space, objective)
    kill_point("search-results")
    summary = _summarise(cfg, run_dir, records, space, data)
    summary["seconds"] = round(time.time() - started, 1)
    write_json_atomic(run_dir / RunLayout.SEARCH_SUMMARY, summary)
    _print_summary(summary)
    return summary


def _serve_locally(
    tuner: TrialTuner,
    cfg: DictConfig,
    cfg_path: Path,
    run_dir: Path,
    workers: PrestartedWorkers | None,
) -> None:
    """A local search: this process holds the oracle on 127.0.0.1, worker processes train."""
    tuner.save()
    # Trials left running by an earlier, killed search: their worker processes died with it.
    for tuner_id in list(tuner.oracle.ongoing_trials):
        tuner.oracle.release(tuner_id, "its process ended with the search that started it")
    if tuner.oracle.over():
        if workers is not None:  # started for trials there are none of
            workers.close()
        return
    pool = WorkerPool(tuner.oracle, cfg_path, run_dir, int(cfg.tuner.workers),
                      int(cfg.tuner.trials_per_process),
                      memory_mb=float(cfg.tuner.worker_memory_mb),
                      start_ahead=bool(cfg.tuner.start_ahead), prestarted=workers)  # fmt: skip
    try:
        serve(tuner.oracle, "127.0.0.1:0", done=pool.done, tick=pool.tick)
    finally:
        pool.close()


def _failed_trials_error(oracle: Any, exc: RuntimeError, run_dir: Path) -> KerasdiagError:
    """keras-tuner gives up after several failed trials in a row: say why, in one line.

    The last failed trial's own message comes from the ledger (keras-tuner's message does not
    travel from a worker process to the chief).
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines or "consecutive failures" not in lines[0]:
        raise exc
    failed = [e for e in read_ledger(run_dir) if e.get("status") == "failed" and e.get("message")]
    last = failed[-1]["message"] if failed else lines[-1].rsplit("Error: ", 1)[-1]
    stage = getattr(oracle, "stage_number", 1)
    return KerasdiagError(f"search stage {stage} stopped: {lines[0]} Last: {last}")


def _summarise(
    cfg: DictConfig,
    run_dir: Path,
    records: list[TrialRecord],
    space: list[Param],
    data: Dataset | None,
) -> dict[str, Any]:
    objective = str(cfg.tuner.objective)
    counts = {s: sum(r.status == s for r in records) for s in ("completed", "diverged", "failed")}
    summary: dict[str, Any] = {
        "recipe": cfg.recipe,
        "run_dir": str(run_dir),
        "objective": objective,
        "trials": len(records),
        **counts,
        "best": None,
        "test": {},
    }
    best = best_records(records, objective, 1)
    if not best:
        return summary
    best = best[0]
    summary["best"] = {
        "stage": best.stage,
        "trial": best.trial,
        "values": best.values,
        "score": best.score,
        "epochs": best.epochs,
        "checkpoint": best.checkpoint,
    }
    if best.checkpoint:
        # The best trial's kept model on the held-out test split, batched like its trial.
        data = data if data is not None else load_dataset(cfg.data, loss_task(cfg.loss.name))
        best_cfg = trial_config(cfg, space, best.values, best.budget)
        model = load_model_safely(run_dir / best.checkpoint)
        summary["test"] = evaluate_test(best_cfg, model, data)
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    best, test = summary["best"], summary["test"]
    head = (
        f"\nsearch {summary['recipe']}: {summary['trials']} trials "
        f"({summary['completed']} completed, {summary['diverged']} diverged, "
        f"{summary['failed']} failed) in {summary['seconds']} s"
    )
    if summary["diverged"]:  # the fix text of the one table of symptoms
        head += f"\ndiverged trials: {fix_for('diverged')}"
    if best is None:
        print(f"{head}\nno trial produced a score\nrun directory: {summary['run_dir']}")
        return
    values = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["values"].items()
    )
    test_text = "".join(  # the scores the task has (regression: no accuracy)
        f" | test {name} {test[name]:.4f}"
        for name in ("accuracy", "mae")
        if math.isfinite(test.get(name, math.nan))
    )
    print(
        f"{head}\nbest {summary['objective']} {best['score']:.4f}: stage {best['stage']} "
        f"trial {best['trial']} ({values}){test_text}\n"
        f"checkpoint {best['checkpoint']}\nresults: search.csv, search.png\n"
        f"run directory: {summary['run_dir']}",
        flush=True,
    )
