"""Train a kerasdiag recipe: ``python scripts/train.py recipe=cifar_softmax optimizer.lr=0.01``.

Thin on purpose: Hydra composes the config once; :class:`kerasdiag.cli.Preflight` (a Hydra
callback) validates it and the run directory before TensorFlow starts, then
``kerasdiag.cli.dispatch.run`` does the work in Hydra's run directory: one training, a search
(``tuner=...``) or an ensemble (``ensemble=...``).

Exit codes: 0 done; 2 bad input of any kind (config, data, run directory), with one line on
stderr; 3 training stopped on a NaN/Inf loss (``nan.json`` in the run directory says where).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide CUDA-not-found noise on CPU machines

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from kerasdiag.cli import console_log, exit_on_user_error, load_inputs, run_app, task_started  # noqa: E402
from kerasdiag.config import CONF_DIR, register_schema, validate_config  # noqa: E402
from kerasdiag.core.naming import register_resolvers  # noqa: E402

register_schema()
register_resolvers(CONF_DIR)  # --help's recipe list and run directories' names


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    task_started()
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    with console_log(Path(run_dir) / "train.log"), exit_on_user_error(run_dir):
        if hydra_cfg.mode == RunMode.MULTIRUN:  # a single run was checked by the Preflight callback
            validate_config(cfg)
        data = load_inputs(cfg)  # bad data ends the run here, before TensorFlow starts
        from kerasdiag.cli.dispatch import run  # TensorFlow starts here

        run(cfg, run_dir, data=data)


if __name__ == "__main__":
    run_app(main)
