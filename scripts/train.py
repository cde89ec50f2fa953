"""Train a kerasdiag recipe: ``python scripts/train.py recipe=cifar_softmax optimizer.lr=0.01``.

Thin on purpose: Hydra composes the config once; :class:`kerasdiag.cli.Preflight` (a Hydra
callback) validates it and the run directory before TensorFlow starts, then
``kerasdiag.cli.dispatch.run`` does the work in Hydra's run directory: one training, a search
(``tuner=...``) or an ensemble (``ensemble=...``).

Exit codes: 0 done; 2 bad input of any kind (config, data, run directory), with one line on
stderr; 3 training stopped on a NaN/Inf loss (``nan.json`` in the run directory says where);
130/143 stopped by SIGINT/SIGTERM at a safe point, backed up (one line: the same command
resumes); see ``kerasdiag.cli.hydra_app`` for the others.

The console shows kerasdiag's output, not TensorFlow's start-up lines (its banner, the oneDNN
note, CUDA probing on a CPU machine, float64 graph warnings): see ``kerasdiag.core.console``.
``--verbose`` (anywhere on the command line; Hydra never sees it), or the environment variable
``KERASDIAG_TF_LOGS=1``, restores TensorFlow's native logging: kerasdiag then sets and filters
nothing, so ``TF_CPP_MIN_LOG_LEVEL`` is TensorFlow's default (all) unless you set it. A
``TF_CPP_MIN_LOG_LEVEL`` of your own always wins. ``trainer.verbose`` (0/1/2) is another
thing: how Keras reports the epochs (silent, progress bar, a line per epoch).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if "--verbose" in sys.argv[1:]:  # before kerasdiag quiets TensorFlow on import, and Hydra parses
    sys.argv = [sys.argv[0], *(arg for arg in sys.argv[1:] if arg != "--verbose")]
    os.environ["KERASDIAG_TF_LOGS"] = "1"  # kerasdiag.core.console.VERBOSE_ENV

from kerasdiag.core.heap import pause_collection, resume_collection  # noqa: E402

pause_collection()  # until TensorFlow is loaded: see kerasdiag.core.heap

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from kerasdiag.cli import (  # noqa: E402
    console_log,
    exit_on_user_error,
    load_inputs,
    prestart_workers,
    run_app,
    task_started,
)
from kerasdiag.config import CONF_DIR, register_schema, validate_config  # noqa: E402
from kerasdiag.core.io import remove_stale_temporaries  # noqa: E402
from kerasdiag.core.naming import register_resolvers  # noqa: E402
from kerasdiag.core.signals import (  # noqa: E402
    install_stop_handlers,
    raise_if_stop_requested,
    resume_command,
)

register_schema()
register_resolvers(CONF_DIR)  # --help's recipe list and run directories' names


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    task_started()
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    with console_log(Path(run_dir) / "train.log"), exit_on_user_error(run_dir):
        # SIGTERM/SIGINT from here on: a backup at the next batch end, one line, exit 128+sig
        install_stop_handlers(resume_command(sys.argv, None if multirun else run_dir))
        remove_stale_temporaries(run_dir, recursive=True)  # a kill -9'd writer's leftovers
        if hydra_cfg.mode == RunMode.MULTIRUN:  # a single run was checked by the Preflight callback
            validate_config(cfg)
        data = load_inputs(cfg)  # bad data ends the run here, before TensorFlow starts
        # a search's worker processes start now: their TensorFlow loads while ours does
        with prestart_workers(cfg, run_dir) as workers:
            from kerasdiag.cli.dispatch import run  # TensorFlow starts here

            resume_collection()
            run(cfg, run_dir, data=data, workers=workers)
        raise_if_stop_requested("after the run was complete", resumable=False)


if __name__ == "__main__":
    run_app(main)
