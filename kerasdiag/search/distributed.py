"""Distributed search that survives dead workers and a dead chief: leases, heartbeats, deadlines.

keras-tuner's chief/worker mode has three gaps (keras-tuner #344, #915, #990): a trial whose
worker dies stays RUNNING in the oracle forever, so the chief never ends; a worker whose chief
is gone waits on a gRPC call with no useful deadline; and a restarted chief puts every trial that
was running back in its retry queue, so a worker still training one of them trains it twice.
This module keeps keras-tuner's engine (its oracle's trial states, ``ongoing_trials``, retry
queue, its gRPC service and messages) and adds what it lacks where keras-tuner keeps the state:

- :class:`LeaseMixin`, for keras-tuner's oracles (random search, Hyperband, Bayesian
  optimisation, kerasdiag's coarse to fine), a **lease** per worker. Every call of a worker renews it; a worker silent for ``lease_seconds`` loses its
  trial, which goes back to keras-tuner's retry queue and to the next worker that asks. The
  lease is an oracle concept (who holds which trial, since when), which is why it lives in the
  oracle: the gRPC servicer only tells it who is calling. Results from a worker that lost its
  lease are ignored, so a trial is recorded once. While a trial is leased out, a worker with
  nothing to do is told to wait (keras-tuner's ``IDLE``), not to stop, so the trial has somewhere
  to go if its worker dies. A reloaded oracle keeps its running trials leased (for one lease)
  instead of re-queueing them at once.
- :class:`LeasedServicer`, keras-tuner's ``OracleServicer`` reading the caller's tuner id from
  the gRPC metadata, with ``UpdateTrial`` without metrics as the heartbeat.
- :func:`serve`, the chief's loop: expires leases and ends once every trial is recorded and
  every worker heard "stopped" (keras-tuner's own loop waits on ongoing trials forever).
- the worker's side, a deadline on every call to the chief and a heartbeat while a trial
  trains, is :mod:`kerasdiag.search.worker_link`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent import futures
from datetime import datetime
from typing import Any

import grpc
import keras_tuner
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_chief
from keras_tuner.src.engine import oracle as oracle_module
from keras_tuner.src.engine import trial as trial_module
from keras_tuner.src.engine.oracle import synchronized

from kerasdiag.config.search_space import Stage, trial_budget
from kerasdiag.core.errors import KerasdiagError
from kerasdiag.core.faults import kill_point
from kerasdiag.core.io import write_text_atomic

METADATA_KEY = "kerasdiag-tuner-id"  # gRPC metadata naming the calling worker
RUNNING, IDLE, STOPPED = (
    trial_module.TrialStatus.RUNNING,
    trial_module.TrialStatus.IDLE,
    trial_module.TrialStatus.STOPPED,
)
COMPLETED, FAILED = trial_module.TrialStatus.COMPLETED, trial_module.TrialStatus.FAILED


# -- the oracle ------------------------------------------------------------------------------


class LeaseMixin:
    """A lease on every running trial, for any keras-tuner ``Oracle`` (see the module doc).

    Mixed in before the oracle class: ``class LeasedHyperbandOracle(LeaseMixin,
    keras_tuner.oracles.HyperbandOracle)``.

    Args:
        lease_seconds: how long a worker may stay silent (no heartbeat, no call) before its
            trial goes to another worker.
        max_lost: a trial whose worker was lost this many times is recorded as failed (a trial
            that kills every process that runs it must not loop forever).
        **kwargs: the oracle's own arguments.
    """

    def __init__(self, *args: Any, lease_seconds: float = 60.0, max_lost: int = 3, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lease_seconds = float(lease_seconds)
        self.max_lost = int(max_lost)
        self.last_seen: dict[str, float] = {}  # tuner id -> monotonic time of its last call
        self.stopped_tuners: set[str] = set()  # told STOPPED: the search is over for them
        self.lost: dict[str, int] = {}  # trial id -> workers lost while running it
        self.from_ledger: set[str] = set()  # trials a restarted chief recorded from the ledger
        # keras-tuner's "too many consecutive failures" stop, raised while ending a trial in a
        # gRPC thread: kept here, every worker is told to stop, and serve() raises it.
        self.fatal: RuntimeError | None = None
        self._reloaded_ongoing: dict[str, str] = {}
        self.handed: dict[str, int] = {}  # tuner id -> trials handed to it (this chief's life)
        self._display = TrialDisplay(self, self._display.verbose)

    # -- keras-tuner's entry points, with leases ---------------------------------------------

    @synchronized
    def create_trial(self, tuner_id: str) -> Any:
        now = time.monotonic()
        self.last_seen[tuner_id] = now
        if self.fatal is not None:
            self.stopped_tuners.add(tuner_id)
            return trial_module.Trial(self.get_space(), status=STOPPED)
        self.expire_leases(now)
        if (
            tuner_id not in self.ongoing_trials
            and not self._retry_queue
            and self.max_trials
            and len(self.trials) >= self.max_trials
            and self.ongoing_trials
        ):
            # Nothing new to hand out, but a leased trial may come back: wait, don't stop.
            return trial_module.Trial(self.get_space(), status=IDLE)
        trial = super().create_trial(tuner_id)
        if trial.status == STOPPED:
            self.stopped_tuners.add(tuner_id)
        elif trial.status == RUNNING:
            self.handed[tuner_id] = self.handed.get(tuner_id, 0) + 1
            kill_point("search-handed-out", int(trial.trial_id))
        return trial

    @synchronized
    def handed_out(self, tuner_id: str) -> int:
        """How many trials ``tuner_id`` was given (a worker process's last one is known)."""
        return self.handed.get(tuner_id, 0)

    @synchronized
    def end_trial(self, trial: Any) -> None:
        kill_point("search-result-received", int(trial.trial_id))
        super().end_trial(trial)
        # keras-tuner saves its state before it lets go of the ended trial: saved again without
        # it, or a chief restarted from this state would take the recorded trial for a running one.
        self.save()
        kill_point("search-recorded", int(trial.trial_id))

    @synchronized
    def heartbeat(self, tuner_id: str | None, trial_id: str) -> bool:
        """Renew ``tuner_id``'s lease; True while it still holds ``trial_id``."""
        if tuner_id is None:  # a client without our metadata: keras-tuner's own behaviour
            return True
        self.last_seen[tuner_id] = time.monotonic()
        held = self.ongoing_trials.get(tuner_id)
        return held is not None and held.trial_id == trial_id

    @synchronized
    def report(self, tuner_id: str | None, trial_id: str, metrics: dict, step: int) -> bool:
        """``update_trial`` for the lease holder only; False (nothing recorded) for others."""
        if not self.heartbeat(tuner_id, trial_id):
            return False
        self.update_trial(trial_id, metrics, step=step)
        return True

    @synchronized
    def finish(self, tuner_id: str | None, trial: Any) -> bool:
        """``end_trial`` for the lease holder only: a late result of a lost lease is dropped."""
        if not self.heartbeat(tuner_id, trial.trial_id):
            print(f"search: result of trial {trial.trial_id} from {tuner_id} ignored: "
                  f"{self._why_not_held(trial.trial_id)}", flush=True)  # fmt: skip
            return False
        try:
            self.end_trial(trial)
        except RuntimeError as exc:  # consecutive failures: the search cannot go on
            self.fatal = exc
            # keras-tuner raises before it lets go of the trial: let go of it here.
            self.ongoing_trials.pop(tuner_id, None)
        return True

    def _why_not_held(self, trial_id: str) -> str:
        """Why a worker's result for ``trial_id`` is not taken: say what really happened."""
        if trial_id in self.from_ledger:
            return ("it was already recorded from search/ledger.jsonl when the chief restarted "
                    "(this worker's own result, recorded once)")  # fmt: skip
        held_by = next(
            (t for t, tr in self.ongoing_trials.items() if tr.trial_id == trial_id), None
        )
        if held_by is not None:
            return (f"its lease expired (no word for {self.lease_seconds:g} s) and {held_by} "
                    "runs it now")  # fmt: skip
        trial = self.trials.get(trial_id)
        if trial is not None and trial.status not in (RUNNING, None):
            return f"it is already recorded ({trial.status}), once"
        return "its lease expired; the trial went back to the queue and is recorded once"

    @synchronized
    def release(self, tuner_id: str, reason: str) -> None:
        """Take ``tuner_id``'s trial back now (its process is known to be dead)."""
        trial = self.ongoing_trials.pop(tuner_id, None)
        if trial is not None:
            self._requeue(trial, tuner_id, reason)

    @synchronized
    def expire_leases(self, now: float | None = None) -> list[str]:
        """Re-queue the trials of workers silent for more than ``lease_seconds``; their ids."""
        now = time.monotonic() if now is None else now
        expired = []
        for tuner_id, trial in list(self.ongoing_trials.items()):
            seen = self.last_seen.setdefault(tuner_id, now)
            if now - seen > self.lease_seconds:
                del self.ongoing_trials[tuner_id]
                self._requeue(trial, tuner_id, f"no word for {self.lease_seconds:g} s")
                expired.append(trial.trial_id)
        return expired

    def _requeue(self, trial: Any, tuner_id: str, reason: str) -> None:
        trial_id = trial.trial_id
        self.lost[trial_id] = self.lost.get(trial_id, 0) + 1
        if self.lost[trial_id] >= self.max_lost:
            trial.status = FAILED
            trial.message = f"lost {self.lost[trial_id]} workers while running it"
            self.end_order.append(trial_id)
            print(f"search: trial {trial_id} failed: {trial.message}", flush=True)
        else:
            self._retry_queue.append(trial_id)
            print(
                f"search: trial {trial_id} lost its worker {tuner_id} ({reason}); it goes to "
                "the next free worker",
                flush=True,
            )
        self._save_trial(trial)
        self.save()

    # -- the state of the search -------------------------------------------------------------

    @synchronized
    def exhausted(self) -> bool:
        """No trial left to start (every trial created, or the space gave no new values)."""
        if self.fatal is not None:
            return True
        if self._retry_queue:
            return False
        return bool(self.stopped_tuners) or bool(
            self.max_trials and len(self.trials) >= self.max_trials
        )

    @synchronized
    def over(self) -> bool:
        """Every trial is recorded: nothing left to start and nothing running."""
        return self.exhausted() and not self.ongoing_trials

    @synchronized
    def done_serving(self, now: float | None = None) -> bool:
        """Over, and every worker heard from lately has been told to stop."""
        now = time.monotonic() if now is None else now
        if not self.over():
            return False
        return all(
            tuner_id in self.stopped_tuners or now - seen > self.lease_seconds
            for tuner_id, seen in self.last_seen.items()
        )

    # -- persistence: keep running trials leased across a chief restart ----------------------

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "lost": dict(self.lost)}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.lost = dict(state.get("lost", {}))
        self._reloaded_ongoing = dict(state.get("ongoing_trials", {}))

    def reload(self) -> None:
        # keras-tuner re-queues every running trial at once, so a worker still training one
        # (the chief was restarted under it) and the next worker to ask would both train it.
        # Keep them leased to their workers instead: one lease to check in, as after a start.
        super().reload()
        now = time.monotonic()
        for tuner_id, trial_id in self._reloaded_ongoing.items():
            if trial_id in self._retry_queue and trial_id in self.trials:
                self._retry_queue.remove(trial_id)
                if self.trials[trial_id].status != RUNNING:
                    # Recorded (its trial.json is saved first) by a chief that ended before
                    # it saved its own state without the trial: recorded, once.
                    if trial_id not in self.end_order and trial_id not in self._retry_queue:
                        self.end_order.append(trial_id)
                    continue
                self.ongoing_trials[tuner_id] = self.trials[trial_id]
                self.last_seen[tuner_id] = now
                # keras-tuner saves its state before its display notes a trial's start.
                display = self._display
                display.trial_start.setdefault(trial_id, datetime.now())
                display.trial_number.setdefault(trial_id, len(self.trials))
                display.search_start = display.search_start or datetime.now()
        self._reloaded_ongoing = {}

    def save(self) -> None:
        # Atomically: a chief killed while saving must leave a state it can resume from.
        write_text_atomic(self._get_oracle_fname(), json.dumps(self.get_state()))


class TrialDisplay(oracle_module.Display):
    """keras-tuner's console lines, naming a trial as ``search.csv`` does (``stage 1 trial 3``)
    instead of keras-tuner's own count (``Trial #4``, one more than the trial's number)."""

    def on_trial_begin(self, trial: Any) -> None:
        if self.verbose < 1:
            return
        now = datetime.now()
        self.trial_start[trial.trial_id] = now
        self.search_start = self.search_start or now
        self.trial_number[trial.trial_id] = len(self.oracle.trials)
        print(f"\nSearch: running {trial_label(trial)}\n", flush=True)
        self.show_hyperparameter_table(trial)
        print()

    def on_trial_end(self, trial: Any) -> None:
        if self.verbose < 1:
            return
        started = self.trial_start.get(trial.trial_id) or datetime.now()
        print(f"{trial_label(trial)} ended ({trial.status.lower()}) after "
              f"{self.format_duration(datetime.now() - started)}")  # fmt: skip
        if trial.score is not None:
            print(f"{self.oracle.objective.name}: {trial.score}")
        best = self.oracle.get_best_trials()
        print(f"best {self.oracle.objective.name} so far: {best[0].score if best else None}")
        if self.search_start is not None:
            print(f"total elapsed time: {self.format_duration(datetime.now() - self.search_start)}")


def trial_label(trial: Any) -> str:
    """``stage S trial N``, as ``search.csv`` names the trial."""
    stage, _ = trial_budget(trial.hyperparameters.values, [Stage(number=1, trials=1, epochs=1)])
    return f"stage {stage} trial {int(trial.trial_id)}"


class LeasedRandomSearchOracle(LeaseMixin, keras_tuner.oracles.RandomSearchOracle):
    """keras-tuner's random search with a lease on every running trial."""


class LeasedHyperbandOracle(LeaseMixin, keras_tuner.oracles.HyperbandOracle):
    """keras-tuner's Hyperband with a lease on every running trial."""


class LeasedBayesianOracle(LeaseMixin, keras_tuner.oracles.BayesianOptimizationOracle):
    """keras-tuner's Bayesian optimisation (Gaussian process) with a lease on every trial."""


def ledger_metrics(event: dict, objective: str, direction: str) -> dict[str, float]:
    """The metrics a trial's ledger ``end`` event holds, as its worker reported (or would have
    reported) them to the chief; a trial without a score gets the worst one."""
    score = event.get("score")
    worst = float("-inf") if direction == "max" else float("inf")
    return {
        objective: worst if score is None else float(score),
        "epochs_run": float(event.get("epochs") or 0),
        "diverged": float(event.get("status") == "diverged"),
    }


def record_from_ledger(oracle: LeaseMixin, finished: dict[int, dict]) -> list[str]:
    """Record running trials that the ledger says finished (their worker could not report it).

    ``finished`` maps trial number -> the ledger's ``end`` event. A worker writes that event before
    it reports to the chief; if the chief was down then, the result is only in the ledger, and
    taking it from there is what keeps a restarted chief from training the trial again.
    """
    recorded = []
    for tuner_id, trial in list(oracle.ongoing_trials.items()):
        event = finished.get(int(trial.trial_id))
        if event is None:
            continue
        metrics = ledger_metrics(event, oracle.objective.name, oracle.objective.direction)
        if event.get("status") == "failed":
            trial.status, trial.message = FAILED, str(event.get("message", ""))
        else:
            oracle.update_trial(trial.trial_id, metrics, step=0)
            trial.status = COMPLETED
        oracle.end_trial(trial)
        oracle.ongoing_trials.pop(tuner_id, None)
        recorded.append(trial.trial_id)
        oracle.from_ledger.add(trial.trial_id)
        print(
            f"search: trial {trial.trial_id} had finished on {event.get('tuner')} before the chief "
            "heard of it; recorded from search/ledger.jsonl, not trained again",
            flush=True,
        )
    return recorded


# -- the chief -------------------------------------------------------------------------------


def _caller(context: Any) -> str | None:
    return dict(context.invocation_metadata() or ()).get(METADATA_KEY)


class LeasedServicer(oracle_chief.OracleServicer):
    """keras-tuner's servicer, telling the oracle who calls (gRPC metadata ``kerasdiag-tuner-id``).

    ``UpdateTrial`` without metrics is the heartbeat; its reply's trial status is ``STOPPED``
    when the caller no longer holds the trial (keras-tuner's way to stop a trial early).
    """

    def UpdateTrial(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's names
        tuner_id = _caller(context)
        metrics = dict(request.metrics)
        if metrics:
            held = self.oracle.report(tuner_id, request.trial_id, metrics, int(request.step))
        else:
            held = self.oracle.heartbeat(tuner_id, request.trial_id)
        trial = trial_module.Trial.from_proto(self.oracle.get_trial(request.trial_id).to_proto())
        if not held:
            trial.status = STOPPED
        return protos.get_service().UpdateTrialResponse(trial=trial.to_proto())

    def EndTrial(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.oracle.finish(_caller(context), trial_module.Trial.from_proto(request.trial))
        return protos.get_service().EndTrialResponse()


def start_server(oracle: LeaseMixin, address: str) -> tuple[Any, int]:
    """Serve ``oracle`` on ``address`` (``ip:port``, port 0: any free one); (server, port)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    protos.get_service_grpc().add_OracleServicer_to_server(LeasedServicer(oracle), server)
    port = server.add_insecure_port(address)
    if not port:
        raise KerasdiagError(
            f"search chief cannot listen on {address} (port in use, or not this machine's "
            "address); set KERASTUNER_ORACLE_PORT to a free port"
        )
    server.start()
    return server, port


def serve(
    oracle: LeaseMixin,
    address: str,
    *,
    done: Callable[[], bool] | None = None,
    tick: Callable[[int], None] | None = None,
    poll: float = 0.2,
) -> None:
    """The chief: serve until ``done()`` (default: :meth:`~LeaseMixin.done_serving`),
    expiring leases every ``poll`` seconds. ``tick(port)`` runs each round (local workers)."""
    server, port = start_server(oracle, address)
    done = done or oracle.done_serving
    try:
        while True:
            oracle.expire_leases()
            if tick is not None:
                tick(port)
            if done():
                break
            time.sleep(poll)
    finally:
        server.stop(grace=1).wait()
    if oracle.fatal is not None:
        raise oracle.fatal
