"""How one trial runs: a keras-tuner ``Tuner`` whose trial is a short kerasdiag training run.

keras-tuner's split: the oracle (:mod:`kerasdiag.search.oracle`) says which values to try;
this tuner turns them into a config (:func:`trial_config`) and trains it with the pipeline's
own ``build_model``, ``training_callbacks`` and ``fit``, for the stage's number of epochs,
stopped early when the loss diverges (:class:`StopOnDivergence`). The trial's best epoch is
kept as ``run_dir/trials/stage{S}-trial{NNN}-{objective}{score:.4f}.keras``, and the trial's
values and score are logged for TensorBoard's HParams dashboard (:mod:`kerasdiag.search.hparams`).

Works the same in a distributed search: on a worker, keras-tuner turns the oracle into a
client of the chief's, and this tuner only runs the trials the chief hands out.

Example:
    >>> tuner = TrialTuner(build_oracle(space, stages, cfg.tuner), cfg=cfg, data=data,
    ...                    space=space, stages=stages, run_dir="outputs/run")  # doctest: +SKIP
    >>> tuner.search()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import keras_tuner
from keras_tuner.src.distribute import oracle_client
from keras_tuner.src.distribute import utils as dist_utils
from omegaconf import DictConfig, OmegaConf

from kerasdiag.callbacks.best_checkpoint import BestCheckpoint
from kerasdiag.config.search_space import Param, Stage, trial_budget
from kerasdiag.core.errors import ConfigError
from kerasdiag.core.faults import kill_point, kill_target
from kerasdiag.core.io import write_text_atomic
from kerasdiag.core.metrics import metric_mode
from kerasdiag.core.rundir import RunLayout
from kerasdiag.data import Dataset
from kerasdiag.modeling.factory import build_model
from kerasdiag.modeling.safe_load import load_model_safely
from kerasdiag.search.distributed import (
    IDLE,
    STOPPED,
    ledger_metrics,
    record_from_ledger,
    serve,
)
from kerasdiag.search.divergence import StopOnDivergence
from kerasdiag.search.hparams import log_trial
from kerasdiag.search.results import kept_checkpoints, trial_checkpoint_name
from kerasdiag.search.space import set_values
from kerasdiag.search.worker_link import Heartbeat, LeasedOracleClient
from kerasdiag.training.pipeline import fit, training_callbacks

LEDGER = "ledger.jsonl"  # one line per trial start and end, from every process
RECYCLED = "recycled"  # search() ran its share of trials; the search itself goes on


def read_ledger(run_dir: str | os.PathLike) -> list[dict]:
    """The events of ``search/ledger.jsonl``; lines a killed writer left incomplete are skipped."""
    path = Path(run_dir) / RunLayout.SEARCH_PROJECT / LEDGER
    events = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
    return events


def finished_in_ledger(run_dir: str | os.PathLike) -> dict[int, dict]:
    """Trial number -> the ``end`` event of each trial whose last ledger event is one."""
    last: dict[int, dict] = {}
    for event in read_ledger(run_dir):
        if "trial" in event:
            last[int(event["trial"])] = event
    return {n: e for n, e in last.items() if e.get("event") == "end"}


def resident_mb() -> float:
    """This process's resident set size in MB (VmRSS; the peak where /proc is missing)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    import resource  # not on Windows; /proc is read above where it exists

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trial_config(
    cfg: DictConfig, space: Sequence[Param], values: Mapping[str, Any], epochs: int
) -> DictConfig:
    """The config one trial trains: ``cfg`` with the sampled values, ``epochs`` epochs.

    The best checkpoint is chosen by the search's objective; sanity stages, monitors and
    TensorBoard are off (a trial is one of many short runs). Raises ConfigError when a sampled
    value makes the config invalid.
    """
    settings = {p.key: values[p.name] for p in space}
    settings.update(
        {
            "trainer.epochs": int(epochs),
            "trainer.checkpoint_monitor": str(cfg.tuner.objective),
            "trainer.tensorboard": False,
            "trainer.resume": False,  # a retried trial starts again from scratch
        }
    )
    for section in ("sanity", "monitors"):
        settings.update({f"{section}.{k}": False for k, v in cfg[section].items() if v is True})
    return set_values(cfg, settings, check=True)


class TrialTuner(keras_tuner.Tuner):
    """Runs the trials of a search in ``run_dir`` (keras-tuner's project ``search/``).

    ``space`` decodes the sampled values (choices travel as JSON text); each trial trains the
    epochs its values carry (``tuner/epochs``, see :func:`~kerasdiag.config.search_space.trial_budget`).
    ``overwrite=False`` makes a second run in the same directory resume where it stopped
    (keras-tuner reloads the oracle's state and trials).
    """

    def __init__(
        self,
        oracle: Any,
        *,
        cfg: DictConfig,
        data: Dataset | None,
        space: Sequence[Param],
        stages: Sequence[Stage],
        run_dir: str | os.PathLike,
        **kwargs: Any,
    ):
        self.cfg = cfg
        self.data = data
        self.space = list(space)
        self.stages = list(stages)
        self.run_dir = Path(run_dir)
        self.objective_name = str(cfg.tuner.objective)
        super().__init__(
            oracle=oracle,
            directory=str(self.run_dir),
            project_name=RunLayout.SEARCH_PROJECT,
            overwrite=False,
            **kwargs,
        )
        tuner_cfg = cfg.tuner
        self.heartbeat_seconds = float(tuner_cfg.heartbeat_seconds)
        if isinstance(self.oracle, oracle_client.OracleClient):
            # A worker: keras-tuner's client, with deadlines and this worker's id on each call.
            self.oracle = LeasedOracleClient(
                self.oracle._oracle,
                chief_timeout=float(tuner_cfg.chief_timeout),
                poll=min(1.0, self.heartbeat_seconds),
            )
        else:
            # The oracle's holder (chief or local): results the ledger has and the oracle lacks
            # (their worker could not report them) are recorded now, not trained again.
            record_from_ledger(self.oracle, finished_in_ledger(self.run_dir))

    def search(
        self,
        *args: Any,
        max_trials: int | None = None,
        memory_mb: float = 0.0,
        **kwargs: Any,
    ) -> str:
        """Run trials until the oracle says stop (``"stopped"``), or ``max_trials`` ran here, or
        this process's resident memory grew by more than ``memory_mb`` (0: no limit) since its
        first trial ended (``"recycled"``: the process ends and a fresh one goes on). The chief
        serves instead.

        keras-tuner's own loop, with two changes: a bounded number of trials (and memory) per
        process, and the chief's server from :func:`kerasdiag.search.distributed.serve`.
        """
        if dist_utils.is_chief_oracle():
            self.save()
            ip, port = os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"]
            print(f"search chief: serving trials on {ip}:{port}", flush=True)
            serve(self.oracle, f"{ip}:{port}")
            return STOPPED
        self.on_search_begin()
        ran = 0
        baseline = None  # resident MB after the first trial (TensorFlow warmed up, data held)
        while max_trials is None or ran < max_trials:
            self.pre_create_trial()
            trial = self.oracle.create_trial(self.tuner_id)
            if trial.status == STOPPED:
                break
            if trial.status == IDLE:
                continue  # a running trial may still come back to be retried
            self.on_trial_begin(trial)
            self._try_run_and_update_trial(trial, *args, **kwargs)
            self.on_trial_end(trial)
            ran += 1
            if memory_mb > 0:  # (no gc.collect here: 0.3 s a trial; clear_session runs one)
                now = resident_mb()
                baseline = now if baseline is None else baseline
                if now - baseline > memory_mb:
                    return RECYCLED
        else:
            return RECYCLED
        self.on_search_end()
        return STOPPED

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        heartbeat = None
        if isinstance(self.oracle, LeasedOracleClient):
            heartbeat = Heartbeat(self.oracle, trial.trial_id, self.heartbeat_seconds)
            heartbeat.start()
        try:
            return self._run_trial(trial, heartbeat)
        finally:
            if heartbeat is not None:
                heartbeat.stop()

    def _try_run_and_update_trial(self, trial: Any, *args: Any, **kwargs: Any) -> None:
        # keras-tuner stores (and its display prints) a whole traceback as a failed trial's
        # message; a FailedTrialError is raised here on purpose with its cause (a lease lost
        # to another worker, a trial config refused): keep that one line.
        super()._try_run_and_update_trial(trial, *args, **kwargs)
        message = trial.message or ""
        marker = "FailedTrialError: "
        if trial.status == keras_tuner.engine.trial.TrialStatus.FAILED and marker in message:
            trial.message = " ".join(message.rsplit(marker, 1)[1].split())

    def _run_trial(self, trial: Any, heartbeat: Heartbeat | None) -> dict[str, float]:
        values = {p.name: p.decode(trial.hyperparameters.get(p.name)) for p in self.space}
        _, epochs = trial_budget(trial.hyperparameters.values, self.stages)
        finished = finished_in_ledger(self.run_dir).get(int(trial.trial_id))
        if finished is not None:
            return self._result_from_ledger(trial, finished)
        self._log_event(trial, "start", values=values, budget=epochs)
        kill_point("search-trial-start", int(trial.trial_id))
        try:
            cfg = trial_config(self.cfg, self.space, values, epochs)
        except ConfigError as exc:
            self._log_event(trial, "end", status="failed", message=str(exc))
            raise keras_tuner.errors.FailedTrialError(str(exc)) from None
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        shutil.rmtree(
            trial_dir / RunLayout.CHECKPOINTS, ignore_errors=True
        )  # left by an interrupted try
        write_text_atomic(trial_dir / RunLayout.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))

        keras.backend.clear_session()  # many trials in one process: free the previous graphs
        model = build_model(cfg, self.data)
        divergence = StopOnDivergence(float(self.cfg.tuner.diverge_factor))
        # First, so that the diverged epoch's NaN metrics reach the checkpoint callback.
        callbacks = [divergence, *training_callbacks(cfg, trial_dir, self.data)]
        if heartbeat is not None:
            callbacks.insert(0, heartbeat)
        if kill_target() is not None:  # a test's kill point after each epoch (metrics.csv written)
            callbacks.append(keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs=None: kill_point("search-epoch", epoch + 1)))  # fmt: skip
        history = fit(cfg, model, self.data, callbacks)
        if heartbeat is not None and heartbeat.lost:
            # Its lease expired (this worker was too slow to answer) and another worker has the
            # trial: drop this result, the chief would ignore it anyway.
            lost = (
                f"trial {trial.trial_id} abandoned: this worker's lease on it was lost (the "
                "chief heard nothing from it for tuner.lease_seconds) and another worker has it"
            )
            self._log_event(trial, "abandoned", message="lease lost to another worker")
            raise keras_tuner.errors.FailedTrialError(lost)

        best = next(c for c in callbacks if isinstance(c, BestCheckpoint))
        kept = self._keep_checkpoint(trial, best)
        worst = -math.inf if metric_mode(self.objective_name) == "max" else math.inf
        score = worst if best.best is None else float(best.best)
        epochs_run = len(history.history.get("loss", []))
        diverged = divergence.diverged_epoch is not None
        log_trial(self.run_dir, trial.trial_id, self.space, values, self.objective_name, score,
                  {"epochs_run": epochs_run, "diverged": int(diverged)})  # fmt: skip
        # The ledger's end event is the trial's commit: everything above is done again if the
        # process dies before it, nothing after it is needed to record the trial.
        self._log_event(
            trial, "end", status="diverged" if diverged else "completed",
            score=score if math.isfinite(score) else None,
            epochs=epochs_run, checkpoint=kept, message=divergence.reason,
        )  # fmt: skip
        kill_point("search-trained", int(trial.trial_id))
        return {
            self.objective_name: score,
            "epochs_run": float(epochs_run),
            "diverged": float(diverged),
        }

    def _result_from_ledger(self, trial: Any, event: dict) -> dict[str, float]:
        """The result of a trial that finished before (its ledger ``end`` event) but whose
        process died before the chief recorded it: reported from the ledger, not trained again."""
        if event.get("status") == "failed":
            raise keras_tuner.errors.FailedTrialError(str(event.get("message", "")))
        print(
            f"search: trial {trial.trial_id} had finished on {event.get('tuner')}, whose process "
            "ended before the chief recorded it; its result is taken from search/ledger.jsonl, "
            "not trained again",
            flush=True,
        )
        return ledger_metrics(event, self.objective_name, metric_mode(self.objective_name))

    def _keep_checkpoint(self, trial: Any, best: BestCheckpoint) -> str:
        """Move the trial's best checkpoint to trials/ under its stable name ("" if none)."""
        trials_dir = self.run_dir / RunLayout.TRIALS
        trials_dir.mkdir(parents=True, exist_ok=True)
        stage = self._stage_of(trial)
        for old in kept_checkpoints(self.run_dir, stage, trial.trial_id):
            old.unlink()  # from an earlier try of this trial (interrupted before it was recorded)
        kept = ""
        if best.best_path is not None and best.best is not None:
            path = trials_dir / trial_checkpoint_name(
                stage, trial.trial_id, self.objective_name, best.best
            )
            os.replace(best.best_path, path)
            kept = str(path.relative_to(self.run_dir))
        with contextlib.suppress(OSError):  # emptied by the move: no folder left behind
            (Path(self.get_trial_dir(trial.trial_id)) / RunLayout.CHECKPOINTS).rmdir()
        return kept

    def load_model(self, trial: Any) -> keras.Model:
        """The kept checkpoint of ``trial`` (what ``get_best_models`` returns)."""
        paths = kept_checkpoints(self.run_dir, self._stage_of(trial), trial.trial_id)
        if not paths:
            raise FileNotFoundError(f"no checkpoint kept for trial {trial.trial_id}")
        return load_model_safely(paths[0])

    def _stage_of(self, trial: Any) -> int:
        return trial_budget(trial.hyperparameters.values, self.stages)[0]

    def _log_event(self, trial: Any, event: str, **fields: Any) -> None:
        """Append one line to ``search/ledger.jsonl``: who ran which trial, when, with what result.

        An append-only log rather than a rewritten file: every process (chief, workers)
        appends whole lines with one O_APPEND write each, so lines never interleave and a
        crash loses at most the line being written.
        """
        record = {
            "event": event,
            "stage": self._stage_of(trial),
            "trial": int(trial.trial_id),
            "tuner": self.tuner_id,
            "pid": os.getpid(),
            "time": round(time.time(), 3),
            **fields,
        }
        line = (json.dumps(record, default=str) + "\n").encode("utf-8")
        path = self.run_dir / RunLayout.SEARCH_PROJECT / LEDGER
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
