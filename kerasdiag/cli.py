"""What the command-line scripts share: one-line errors, exit code 2, no half-written runs."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from kerasdiag.errors import KerasdiagError

# Files Hydra writes into a run directory before our code runs.
HYDRA_FILES = {".hydra", "train.log"}


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` as one line on stderr and exit with ``code``."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)


def preflight(argv: Sequence[str]) -> None:
    """Compose and validate the config the command line asks for, before Hydra makes a run dir.

    Catches unknown recipes, groups and keys, wrong types and bad values with one clear line.
    Multirun sweeps (``-m``) are composed by Hydra per job and checked inside each job.
    """
    if any(a in ("-m", "--multirun") or a.startswith("-") for a in argv):
        return  # flags (--help, --cfg, -m, ...) are Hydra's
    from kerasdiag.config import config_error_line, load_config

    overrides = [a for a in argv if not a.lstrip("+~").startswith("hydra")]
    try:
        load_config(overrides)
    except KerasdiagError as exc:
        fail(str(exc))
    except Exception as exc:  # Hydra's and OmegaConf's composition errors
        fail(config_error_line(exc))


@contextlib.contextmanager
def exit_on_user_error(run_dir: str | Path) -> Iterator[None]:
    """Turn a KerasdiagError into one line and exit 2; drop a run dir that holds nothing of ours."""
    try:
        yield
    except KerasdiagError as exc:
        _discard_if_empty(Path(run_dir))
        fail(str(exc), exc.exit_code)


def _discard_if_empty(run_dir: Path) -> None:
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= HYDRA_FILES:
        shutil.rmtree(run_dir, ignore_errors=True)
