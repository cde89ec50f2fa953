"""Hyperparameter search with keras-tuner: random, log-scaled, coarse to fine,
on one validation split, checkpoints named by score, distributed chief/workers.

keras-tuner's split: :mod:`~kerasdiag.search.oracle` says what to try (the space from YAML,
the oracle of ``tuner.name``; :mod:`~kerasdiag.search.coarse_to_fine` the staged oracle that
narrows its ranges), :mod:`~kerasdiag.search.tuner` how a trial runs,
:mod:`~kerasdiag.search.results` what a search writes (:mod:`~kerasdiag.search.hparams` for
TensorBoard's HParams dashboard), :mod:`~kerasdiag.search.run` the search,
:mod:`~kerasdiag.search.distributed` leases, heartbeats and deadlines on keras-tuner's chief and
workers, :mod:`~kerasdiag.search.worker` the worker processes trials train in.
Names load lazily: validating a space does not start TensorFlow.

Example:
    >>> from kerasdiag.config import load_config
    >>> from kerasdiag.search import run_search
    >>> cfg = load_config(["tuner=coarse_to_fine", "sanity=off", "monitors=off"])
    >>> summary = run_search(cfg, "outputs/search-demo")  # doctest: +SKIP
"""

from __future__ import annotations

from kerasdiag.core.lazy import lazy_exports

_LAZY = {
    "CoarseToFineOracle": "kerasdiag.search.coarse_to_fine",
    "log_trial": "kerasdiag.search.hparams",
    "Param": "kerasdiag.search.oracle",
    "Stage": "kerasdiag.search.oracle",
    "build_oracle": "kerasdiag.search.oracle",
    "narrow_space": "kerasdiag.search.oracle",
    "parse_space": "kerasdiag.search.oracle",
    "validate_search": "kerasdiag.search.oracle",
    "StopOnDivergence": "kerasdiag.search.divergence",
    "TrialTuner": "kerasdiag.search.tuner",
    "trial_config": "kerasdiag.search.tuner",
    "TrialRecord": "kerasdiag.search.results",
    "plot_search": "kerasdiag.search.results",
    "trial_checkpoint_name": "kerasdiag.search.results",
    "write_search_csv": "kerasdiag.search.results",
    "distributed_role": "kerasdiag.search.run",
    "run_search": "kerasdiag.search.run",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
