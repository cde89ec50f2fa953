"""Coarse to fine as one keras-tuner oracle: stages, narrowing and epochs per stage.

:class:`CoarseToFineOracle` is keras-tuner's random search (with the leases of
:class:`~kerasdiag.search.distributed.LeaseMixin`) that runs ``tuner.stages`` one after the
other, the way keras-tuner's ``HyperbandOracle`` runs its brackets: ``populate_space`` hands out
the trials of the current stage, answers ``IDLE`` at a stage boundary until the stage's
running trials have ended, then narrows every range around the ``keep`` best trials of that
stage (:func:`~kerasdiag.config.search_space.narrow_space`) and goes on with the next stage. Each
trial's values carry its stage and epochs (``tuner/stage``, ``tuner/epochs``, as Hyperband's
``tuner/epochs``), so one keras-tuner project holds the whole search: one port for a
distributed search, and keras-tuner's own reload resumes it (the stage is in the oracle's
state, the narrowed ranges follow from the recorded trials). ``tuner=random`` is the same
oracle with one stage.

Example:
    >>> from kerasdiag.config import load_config
    >>> from kerasdiag.search.oracle import build_oracle, validate_search
    >>> cfg = load_config(["tuner=coarse_to_fine"])
    >>> oracle = build_oracle(*validate_search(cfg), cfg.tuner)  # doctest: +SKIP
    >>> oracle.max_trials  # doctest: +SKIP
    28
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras_tuner

from kerasdiag.config.search_space import Param, Stage, narrow_space
from kerasdiag.search.distributed import COMPLETED, IDLE, RUNNING, STOPPED, LeaseMixin
from kerasdiag.search.space import build_hyperparameters

STAGE_KEY, EPOCHS_KEY = "tuner/stage", "tuner/epochs"
# A trial in one of these states is over; any other (running, waiting for a retry) is not.
_OVER = ("COMPLETED", "FAILED", "INVALID", "STOPPED")


class CoarseToFineOracle(LeaseMixin, keras_tuner.oracles.RandomSearchOracle):
    """Random search in stages, each in ranges narrowed around the best of the stage before.

    Args:
        space: the hyperparameters (:func:`~kerasdiag.config.search_space.parse_space`).
        stages: ``trials`` x ``epochs`` per stage (:func:`~kerasdiag.config.search_space.parse_stages`).
        keep: best trials of a stage whose values set the next stage's ranges.
        margin: the next range is the kept values +- this fraction of the previous width.
        **kwargs: :class:`~kerasdiag.search.distributed.LeaseMixin`'s and
            ``RandomSearchOracle``'s arguments (objective, seed, lease_seconds, ...).
    """

    def __init__(
        self,
        space: Sequence[Param],
        stages: Sequence[Stage],
        *,
        keep: int = 3,
        margin: float = 0.1,
        **kwargs: Any,
    ):
        self.space = list(space)
        self.stages = list(stages)
        self.keep, self.margin = int(keep), float(margin)
        self.stage = 0  # index into stages of the stage handing out trials
        super().__init__(
            hyperparameters=build_hyperparameters(self.space),
            max_trials=sum(s.trials for s in self.stages),
            allow_new_entries=False,
            tune_new_entries=False,
            **kwargs,
        )

    @property
    def stage_number(self) -> int:
        return self.stages[self.stage].number

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        while True:
            stage = self.stages[self.stage]
            mine = self._trials_of(stage.number)
            if len(mine) < stage.trials:
                if not mine:
                    self._announce(stage)
                values = self._random_values()
                if values is not None:
                    values.update({STAGE_KEY: stage.number, EPOCHS_KEY: stage.epochs})
                    return {"status": RUNNING, "values": values}
                # The narrowed space holds no new values: the stage is as full as it gets.
            if any(t.status not in _OVER for t in mine):
                return {"status": IDLE}  # the next stage's ranges wait for this one's results
            if self.stage + 1 == len(self.stages):
                return {"status": STOPPED}
            self.stage += 1
            self.hyperparameters = build_hyperparameters(self.stage_space(self.stage))

    def stage_space(self, index: int) -> list[Param]:
        """The ranges of stage ``index`` (0-based): narrowed stage by stage from the trials."""
        space = self.space
        direction = -1.0 if self.objective.direction == "max" else 1.0
        for stage in self.stages[:index]:
            done = [
                t
                for t in self._trials_of(stage.number)
                if t.status == COMPLETED and t.score is not None and math.isfinite(t.score)
            ]
            done.sort(key=lambda t: (direction * t.score, int(t.trial_id)))
            kept = [{p.name: p.decode(t.hyperparameters.values[p.name]) for p in space}
                    for t in done[: self.keep]]  # fmt: skip
            space = narrow_space(space, kept, self.margin)
        return space

    def _trials_of(self, number: int) -> list[Any]:
        return [
            t for t in self.trials.values() if t.hyperparameters.values.get(STAGE_KEY) == number
        ]

    def _announce(self, stage: Stage) -> None:
        ranges = "; ".join(p.describe() for p in self.stage_space(self.stage))
        print(f"\nsearch stage {stage.number}/{len(self.stages)}: {stage.trials} trials x "
              f"{stage.epochs} epoch(s); {ranges}", flush=True)  # fmt: skip

    def _compute_values_hash(self, values: dict[str, Any]) -> str:
        # The stage and epochs are not hyperparameters: the same values twice are a duplicate.
        values = {k: v for k, v in values.items() if not k.startswith("tuner/")}
        return super()._compute_values_hash(values)

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "stage": self.stage}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.stage = int(state.get("stage", 0))

    def reload(self) -> None:
        super().reload()
        self.hyperparameters = build_hyperparameters(self.stage_space(self.stage))
