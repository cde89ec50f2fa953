"""Starting a search's worker processes, with no TensorFlow in the process that starts them.

A worker process spends its first seconds importing TensorFlow and loading the data. The
search's own process pays the same import before it can serve its oracle. Started one after
the other, the two imports add up; :func:`prestart_workers` starts the workers of a local
search first, before the command line imports TensorFlow, so both imports run at once (on two
cores, the search's first trial starts seconds earlier). The oracle's port is not known yet
then: a prestarted worker loads its data and waits for the port to appear in a file
(:data:`ENV_PORT_FILE`), which :class:`~kerasdiag.search.worker.WorkerPool` writes once it serves.

Example:
    >>> from kerasdiag.config import load_config
    >>> cfg = load_config(["tuner=random", "tuner.max_trials=4"])
    >>> with prestart_workers(cfg, "outputs/search-demo") as workers:  # doctest: +SKIP
    ...     run_search(cfg, "outputs/search-demo", workers=workers)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kerasdiag.core.errors import ConfigError
from kerasdiag.core.io import write_text_atomic
from kerasdiag.core.rundir import RunLayout

ENV_IP, ENV_PORT, ENV_ID = "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"
ENV_SUPERVISED = "KERASDIAG_SEARCH_WORKER"
ENV_START_AFTER = "KERASDIAG_START_AFTER"  # pid of the worker process this one takes over from
# A worker started before its search serves reads the oracle's port from this file.
ENV_PORT_FILE = "KERASDIAG_ORACLE_PORT_FILE"
# Worker processes sharing one GPU must not each reserve all its memory (TensorFlow's default).
ENV_GPU_GROWTH = "TF_FORCE_GPU_ALLOW_GROWTH"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # holds kerasdiag/ and recipes/
PORT_FILE = "oracle-port"
LOCAL_HOST = "127.0.0.1"


def distributed_role() -> str:
    """``local``, ``chief`` or ``worker``, by keras-tuner's rule for its environment variables."""
    if ENV_IP not in os.environ:
        return "local"
    for var in (ENV_PORT, ENV_ID):
        if not os.environ.get(var):
            raise ConfigError(var, os.environ.get(var), f"must be set along with {ENV_IP}")
    port = os.environ[ENV_PORT]
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(ENV_PORT, port, "must be a TCP port number")
    return "chief" if "chief" in os.environ[ENV_ID] else "worker"


@contextlib.contextmanager
def config_file(cfg: DictConfig) -> Iterator[Path]:
    """The resolved config in a private temporary file, for worker processes to read."""
    folder = tempfile.mkdtemp(prefix="kerasdiag-search-")
    path = Path(folder) / RunLayout.CONFIG
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        (path.parent / PORT_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def allow_gpu_memory_growth() -> None:
    """Let TensorFlow take GPU memory as it needs it rather than all at once, unless the user
    said otherwise: a search's processes (chief, workers, a worker starting ahead) share a GPU.
    Read by TensorFlow when it first touches a device: call before that."""
    os.environ.setdefault(ENV_GPU_GROWTH, "true")


def spawn(
    cfg_path: Path,
    run_dir: Path,
    max_trials: int,
    env: dict[str, str],
    memory_mb: float = 0.0,
) -> subprocess.Popen:
    """Start one worker process (``python -m kerasdiag.search.worker_process ...``)."""
    env = {**os.environ, **env}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault(ENV_GPU_GROWTH, "true")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
    )
    for var in ("no_proxy", "NO_PROXY"):  # gRPC honours proxy variables: never for the chief
        env[var] = ",".join(p for p in (env.get(var, ""), "127.0.0.1,localhost") if p)
    command = [sys.executable, "-m", "kerasdiag.search.worker_process", str(cfg_path), str(run_dir),
               str(max_trials), str(memory_mb)]  # fmt: skip
    env[ENV_SUPERVISED] = str(os.getpid())
    return subprocess.Popen(command, env=env)


def worker_env(number: int, port: int | Path) -> dict[str, str]:
    """keras-tuner's variables for local worker process ``number`` (from 0) of a search:
    the oracle's ``port``, or the file it will be published in (see :func:`await_port`)."""
    env = {ENV_ID: f"proc{number}"}
    if isinstance(port, Path):
        return {**env, ENV_PORT_FILE: str(port)}
    return {**env, ENV_IP: LOCAL_HOST, ENV_PORT: str(port)}


@dataclass
class PrestartedWorkers:
    """Worker processes started before their search serves, and the config they read."""

    cfg_path: Path
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    @property
    def port_file(self) -> Path:
        return self.cfg_path.parent / PORT_FILE

    def publish_port(self, port: int) -> None:
        """Tell the waiting workers where the oracle listens."""
        write_text_atomic(self.port_file, str(int(port)))

    def take(self) -> list[tuple[str, subprocess.Popen]]:
        """The processes, handed over once (to the search's worker pool)."""
        procs, self.procs = self.procs, []
        return procs

    def close(self) -> None:
        """End any process nobody took (the search stopped before it served)."""
        for _, proc in self.take():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def prestart_workers(
    cfg: DictConfig, run_dir: str | os.PathLike
) -> Iterator[PrestartedWorkers | None]:
    """Start a local search's worker processes now (None: this run trains in its process).

    Call before TensorFlow is imported. A search that ends without serving (resumed when
    already over, refused) kills the processes on the way out.
    """
    per_process = int(cfg.tuner.trials_per_process) if cfg.tuner.name != "none" else 0
    if not per_process or distributed_role() != "local":
        yield None
        return
    with config_file(cfg) as cfg_path:
        workers = PrestartedWorkers(cfg_path)
        try:
            for slot in range(int(cfg.tuner.workers)):
                env = worker_env(slot, workers.port_file)
                proc = spawn(cfg_path, Path(run_dir), per_process, env,
                             float(cfg.tuner.worker_memory_mb))  # fmt: skip
                workers.procs.append((env[ENV_ID], proc))
            yield workers
        finally:
            workers.close()


def await_port(port_file: Path, poll: float = 0.02) -> None:
    """A prestarted worker: wait for the search to publish its oracle's port, then use it.

    The worker dies with its parent (``die_with_parent``), so a search that never serves
    never leaves it waiting.
    """
    while not port_file.exists():
        time.sleep(poll)
    os.environ[ENV_IP], os.environ[ENV_PORT] = LOCAL_HOST, port_file.read_text().strip()
