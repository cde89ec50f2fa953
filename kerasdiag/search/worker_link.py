"""The worker's side of a distributed search: a chief that stops answering ends the worker.

keras-tuner's ``OracleClient`` waits on its gRPC calls with no useful deadline, so a worker
whose chief is gone waits forever. :class:`LeasedOracleClient` puts a deadline on every call
and names the calling worker (the chief's leases, :mod:`kerasdiag.search.distributed`, need
it); :class:`Heartbeat` renews the worker's lease while a trial trains. A worker that cannot
reach its chief for ``chief_timeout`` seconds raises :class:`ChiefLostError`: one line, exit
code 5.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import grpc
import keras
import keras_tuner
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_client
from keras_tuner.src.engine import trial as trial_module

from kerasdiag.core.errors import KerasdiagError
from kerasdiag.search.distributed import IDLE, METADATA_KEY, STOPPED

CHIEF_LOST_EXIT_CODE = 5


class ChiefLostError(KerasdiagError, keras_tuner.errors.FatalError):
    """A worker could not reach its chief within ``chief_timeout`` seconds (exit code 5)."""

    exit_code = CHIEF_LOST_EXIT_CODE


def chief_lost_message(address: str, seconds: float, what: str) -> str:
    return (
        f"lost the search chief at {address}: no answer for {seconds:g} s ({what}); this "
        "worker stops. Its trial goes to another worker; start the chief again (same command, "
        "same run directory) and then this worker"
    )


# -- the workers -----------------------------------------------------------------------------

_RETRY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class LeasedOracleClient(oracle_client.OracleClient):
    """keras-tuner's ``OracleClient`` with deadlines, the caller's id, and waits when idle.

    Each call waits at most ``chief_timeout`` seconds in all for the chief (retrying while it
    is unreachable: a chief that restarts in time is picked up again), then raises
    :class:`ChiefLostError`. ``IDLE`` answers (a leased trial may still come back) are
    followed by a ``poll``-second pause before the tuner asks again.
    """

    def __init__(self, oracle: Any, *, chief_timeout: float, poll: float = 0.5):
        super().__init__(oracle)
        self.address = (
            f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
        )
        # gRPC's reconnect backoff grows to 2 minutes: a chief restarted within chief_timeout
        # would be found too late. Retry the connection every second at most.
        channel = grpc.insecure_channel(self.address, options=[
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.min_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ])  # fmt: skip
        self.stub = protos.get_service_grpc().OracleStub(channel)
        self.chief_timeout = float(chief_timeout)
        self.poll = float(poll)
        self.metadata = ((METADATA_KEY, self.tuner_id),)

    def call(self, name: str, request: Any, timeout: float | None = None) -> Any:
        """One RPC, retried while the chief is unreachable, for ``timeout`` s at most in all."""
        budget = self.chief_timeout if timeout is None else timeout
        start = time.monotonic()
        while True:
            left = budget - (time.monotonic() - start)
            try:
                return getattr(self.stub, name)(
                    request,
                    wait_for_ready=True,
                    timeout=max(0.1, min(left, 10.0)),
                    metadata=self.metadata,
                )
            except grpc.RpcError as exc:
                if exc.code() not in _RETRY:
                    detail = " ".join(str(exc.details()).split())[-300:]
                    raise KerasdiagError(f"search chief at {self.address}: {detail}") from None
                if time.monotonic() - start >= budget:
                    raise ChiefLostError(
                        chief_lost_message(self.address, budget, f"{name} call")
                    ) from None

    def get_space(self) -> Any:
        response = self.call("GetSpace", protos.get_service().GetSpaceRequest())
        return keras_tuner.HyperParameters.from_proto(response.hyperparameters)

    def update_space(self, hyperparameters: Any) -> None:
        request = protos.get_service().UpdateSpaceRequest(
            hyperparameters=hyperparameters.to_proto()
        )
        self.call("UpdateSpace", request)

    def create_trial(self, tuner_id: str) -> Any:
        request = protos.get_service().CreateTrialRequest(tuner_id=tuner_id)
        trial = trial_module.Trial.from_proto(self.call("CreateTrial", request).trial)
        if trial.status == IDLE:
            time.sleep(self.poll)
        return trial

    def update_trial(self, trial_id: str, metrics: dict, step: int = 0) -> Any:
        request = protos.get_service().UpdateTrialRequest(
            trial_id=trial_id, metrics=metrics, step=step
        )
        return trial_module.Trial.from_proto(self.call("UpdateTrial", request).trial)

    def end_trial(self, trial: Any) -> None:
        self.call("EndTrial", protos.get_service().EndTrialRequest(trial=trial.to_proto()))

    def get_trial(self, trial_id: str) -> Any:
        request = protos.get_service().GetTrialRequest(trial_id=trial_id)
        return trial_module.Trial.from_proto(self.call("GetTrial", request).trial)

    def get_best_trials(self, num_trials: int = 1) -> list:
        request = protos.get_service().GetBestTrialsRequest(num_trials=num_trials)
        response = self.call("GetBestTrials", request)
        return [trial_module.Trial.from_proto(t) for t in response.trials]


class Heartbeat(keras.callbacks.Callback):
    """Renew this worker's lease every ``every`` seconds while a trial trains.

    A background thread sends the heartbeat (an epoch can be longer than a lease). When the
    chief says the trial is no longer this worker's (its lease expired and the trial went
    elsewhere), training stops at the next batch and ``lost`` is True. When the chief cannot be
    reached for ``chief_timeout`` seconds, the process prints one ``error:`` line and exits with
    code 5 at once: a worker never trains on for a chief that is gone.
    """

    def __init__(self, client: LeasedOracleClient, trial_id: str, every: float):
        super().__init__()
        self.client = client
        self.trial_id = trial_id
        self.every = float(every)
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kerasdiag-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)  # a call in flight ends on its own

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.lost:
            self.model.stop_training = True

    def _run(self) -> None:
        request = protos.get_service().UpdateTrialRequest(trial_id=self.trial_id)
        while not self._stop.wait(self.every):
            try:
                reply = self.client.call("UpdateTrial", request)
            except ChiefLostError as exc:
                if self._stop.is_set():
                    return
                if not os.environ.get("KERASDIAG_SEARCH_WORKER"):  # else its supervisor says it
                    print(f"error: {exc}", file=sys.stderr, flush=True)
                sys.stdout.flush()
                os._exit(CHIEF_LOST_EXIT_CODE)
            except KerasdiagError:
                continue  # the chief answered with an error: it is alive; try again later
            if trial_module.Trial.from_proto(reply.trial).status == STOPPED:
                self.lost = True
                return
