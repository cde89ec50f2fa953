"""Trials in worker processes: a search's memory stays flat however many trials it runs.

A TensorFlow process that trains one model after another grows by a few MB per model even
after ``keras.backend.clear_session()`` (keras-tuner #395, #873): graphs, traced functions and
allocator caches that are never given back. A search therefore trains its trials in worker
processes. A worker keeps TensorFlow, its data and the search's state across trials (clearing
Keras' session between them) and ends once its resident memory has grown by more than
``tuner.worker_memory_mb`` since its first trial, or after ``tuner.trials_per_process``
trials; a new one takes its place. With ``tuner.start_ahead`` the next one starts (imports
TensorFlow, loads the data) while the previous one trains its last counted trial, and takes
its first trial when the previous one has ended, so start-up overlaps training.
They are ordinary keras-tuner workers of :mod:`kerasdiag.search.distributed` (leases, heartbeats,
deadlines), talking to the search's chief on 127.0.0.1:

- a local search serves its oracle on a free port of 127.0.0.1 and keeps ``tuner.workers``
  worker processes running (:class:`WorkerPool` in the chief's loop);
- a distributed worker (``KERASTUNER_TUNER_ID=tuner0``) is a supervisor: it runs the same worker
  processes one after another against the remote chief (:func:`supervise`).

A worker process dies with its parent (Linux ``PR_SET_PDEATHSIG``), so killing a search or a
worker never leaves a trial training on its own.

    python -m kerasdiag.search.worker_process CONFIG.yaml RUN_DIR MAX_TRIALS [MEMORY_MB]

Exit codes: 0 the search has no trial left, 10 ran MAX_TRIALS or grew past MEMORY_MB (start
another), 5 lost the chief,
2 bad input.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kerasdiag.config import typed, validate_config
from kerasdiag.config.schema import loss_task
from kerasdiag.config.search_space import validate_search
from kerasdiag.core.errors import KerasdiagError
from kerasdiag.data import load_dataset
from kerasdiag.search.launch import (
    ENV_ID,
    ENV_PORT_FILE,
    ENV_START_AFTER,
    ENV_SUPERVISED,
    PrestartedWorkers,
    allow_gpu_memory_growth,
    await_port,
    spawn,
    worker_env,
)
from kerasdiag.search.oracle import build_oracle
from kerasdiag.search.tuner import RECYCLED, TrialTuner
from kerasdiag.search.worker_link import ChiefLostError, chief_lost_message
from kerasdiag.training.pipeline import seed_everything

RECYCLE_EXIT_CODE = 10
CHIEF_LOST_EXIT_CODE = 5  # as kerasdiag.search.distributed (no TensorFlow imported here)
MAX_CRASHES = 3  # worker processes in a row that die without a word: the search stops


def die_with_parent(parent: int) -> None:
    """End this process when ``parent`` ends (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it ended before the line above
        os._exit(1)


class WorkerPool:
    """``count`` local worker processes, restarted until the search's oracle is over.

    Called by the chief's loop (:func:`~kerasdiag.search.distributed.serve`) with the port it
    listens on. A process that ends after its share of trials (or memory) is replaced; one that
    dies gives its trial back at once (no need to wait for the lease) and is replaced too. With
    ``start_ahead``, a slot's next process is started as soon as the oracle has handed its
    current one its last trial (``max_trials``); it waits for that one to end
    (``KERASDIAG_START_AFTER``) before it asks for a trial.
    """

    def __init__(
        self,
        oracle: Any,
        cfg_path: Path,
        run_dir: Path,
        count: int,
        max_trials: int,
        *,
        memory_mb: float = 0.0,
        start_ahead: bool = False,
        prestarted: PrestartedWorkers | None = None,
    ):
        self.oracle = oracle
        self.cfg_path, self.run_dir = cfg_path, run_dir
        self.max_trials = max_trials
        self.memory_mb = float(memory_mb)
        self.start_ahead = bool(start_ahead)
        self.procs: list[tuple[str, subprocess.Popen] | None] = [None] * count
        self.ahead: list[tuple[str, subprocess.Popen] | None] = [None] * count
        self.started = 0
        self.crashes = 0
        self.prestarted = prestarted

    def _spawn(self, port: int, after: int | None = None) -> tuple[str, subprocess.Popen]:
        env = worker_env(self.started, port)
        tuner_id = env[ENV_ID]
        self.started += 1
        if after is not None:
            env[ENV_START_AFTER] = str(after)
        proc = spawn(self.cfg_path, self.run_dir, self.max_trials, env, self.memory_mb)
        return tuner_id, proc

    def _ended(self, tuner_id: str, code: int) -> None:
        """Book a worker process that ended with ``code``; raise when they keep dying."""
        if code == RECYCLE_EXIT_CODE or code == 0:
            self.crashes = 0
            return
        self.oracle.release(tuner_id, f"its process ended with exit code {code}")
        self.crashes += 1
        if code == 2 or self.crashes >= MAX_CRASHES:
            raise KerasdiagError(
                f"search stopped: worker processes end with exit code {code} "
                f"({self.crashes} in a row); their output above says why"
            )

    def _adopt(self, port: int) -> None:
        """Take the processes started before the oracle served, and tell them its port."""
        if self.prestarted is None:
            return
        procs = self.prestarted.take()  # one per slot: prestart_workers starts tuner.workers
        self.prestarted.publish_port(port)
        self.prestarted = None
        for slot, entry in enumerate(procs):
            self.procs[slot] = entry
        self.started = len(procs)  # adopted before this pool spawned any

    def tick(self, port: int) -> None:
        self._adopt(port)
        for slot, entry in enumerate(self.procs):
            if entry is not None:
                code = entry[1].poll()
                if code is None:
                    self._start_ahead(slot, port)
                    continue
                self.procs[slot], self.ahead[slot] = self.ahead[slot], None
                self._ended(entry[0], code)
                if self.procs[slot] is not None:
                    continue
            if not self.oracle.exhausted():
                self.procs[slot] = self._spawn(port)

    def _start_ahead(self, slot: int, port: int) -> None:
        """Start the slot's next process once its running one has its last trial."""
        tuner_id, proc = self.procs[slot]  # type: ignore[misc]
        if (
            self.start_ahead
            and self.max_trials
            and self.ahead[slot] is None
            and self.oracle.handed_out(tuner_id) >= self.max_trials
            and not self.oracle.exhausted()
        ):
            self.ahead[slot] = self._spawn(port, after=proc.pid)

    def _entries(self) -> list[tuple[str, subprocess.Popen]]:
        return [e for e in (*self.procs, *self.ahead) if e is not None]

    def idle(self) -> bool:
        """No worker process alive."""
        return all(proc.poll() is not None for _, proc in self._entries())

    def done(self) -> bool:
        return self.oracle.over() and self.idle()

    def close(self) -> None:
        for _, proc in self._entries():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def wait_for_predecessor(pid: int, poll: float = 0.05) -> None:
    """Wait until process ``pid`` has ended (a zombie counts as ended): a worker that started
    ahead takes no trial while the one it replaces still trains."""
    stat = Path(f"/proc/{pid}/stat")
    while True:
        try:
            if stat.exists():
                if stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
            else:
                os.kill(pid, 0)  # no /proc (not Linux): ask the system
        except (OSError, IndexError):
            return
        time.sleep(poll)


def supervise(cfg_path: Path, run_dir: Path, max_trials: int, memory_mb: float = 0.0) -> None:
    """A distributed worker: worker processes one after another until the search is over.

    Raises ChiefLostError when one lost the chief, KerasdiagError when they keep dying.
    """
    base = os.environ["KERASTUNER_TUNER_ID"]
    crashes = 0
    for n in range(1_000_000):
        proc = spawn(cfg_path, run_dir, max_trials, {"KERASTUNER_TUNER_ID": f"{base}.{n}"},
                     memory_mb)  # fmt: skip
        try:
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code == 0:
            return
        if code == RECYCLE_EXIT_CODE:
            crashes = 0
            continue
        if code == CHIEF_LOST_EXIT_CODE:
            address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
            timeout = float(OmegaConf.load(cfg_path).tuner.chief_timeout)
            raise ChiefLostError(chief_lost_message(address, timeout, "worker process"))
        crashes += 1
        if code == 2 or crashes >= MAX_CRASHES:
            raise KerasdiagError(
                f"search worker stopped: its trial processes end with exit code {code} "
                f"({crashes} in a row); their output above says why"
            )
        time.sleep(1.0)


def load_worker_config(path: str | os.PathLike) -> DictConfig:
    """The config a worker process trains with: the file, typed by the schema, validated."""
    cfg = typed(OmegaConf.load(path))
    validate_config(cfg)
    return cfg


def main(argv: list[str]) -> int:
    """Run one worker process; returns its exit code (see the module docstring). The
    process's command is :mod:`kerasdiag.search.worker_process`."""
    if os.environ.get(ENV_SUPERVISED, "").isdigit():
        die_with_parent(int(os.environ[ENV_SUPERVISED]))
    allow_gpu_memory_growth()
    cfg_path, run_dir, max_trials = argv[0], Path(argv[1]), int(argv[2])
    memory_mb = float(argv[3]) if len(argv) > 3 else 0.0
    try:
        cfg = load_worker_config(cfg_path)
        space, stages = validate_search(cfg)
        seed_everything(cfg.trainer)
        data = load_dataset(cfg.data, loss_task(cfg.loss.name))
        if os.environ.get(ENV_PORT_FILE):  # started before the search served: wait for it
            await_port(Path(os.environ[ENV_PORT_FILE]))
        tuner = TrialTuner(build_oracle(space, stages, cfg.tuner), cfg=cfg, data=data,
                           space=space, stages=stages, run_dir=run_dir)  # fmt: skip
        if os.environ.get(ENV_START_AFTER, "").isdigit():  # started ahead: ready, now wait
            wait_for_predecessor(int(os.environ[ENV_START_AFTER]))
        outcome = tuner.search(max_trials=max_trials or None, memory_mb=memory_mb)
    except ChiefLostError as exc:
        if not os.environ.get(ENV_SUPERVISED):
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return CHIEF_LOST_EXIT_CODE
    except KerasdiagError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        return exc.exit_code
    return RECYCLE_EXIT_CODE if outcome == RECYCLED else 0
