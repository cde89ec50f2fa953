"""The result every pre-training check returns (gradient check, initial loss, ...)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kerasdiag.core.errors import KerasdiagError


@dataclass
class StageResult:
    """Outcome of one check: ``passed`` is None when the stage was skipped, or when it ran
    and its data could not decide (``inconclusive``: status ``"inconclusive"``, neither a pass
    nor a failure; the message says what size of data would decide).

    ``message`` says what the check found; ``fix``, when the check knows one, what to change
    (the diagnosis gives it as the failed stage's fix). ``text`` is both, as printed.
    """

    name: str
    passed: bool | None
    value: float | None = None
    expected: float | None = None
    message: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    fix: str = ""
    inconclusive: bool = False

    @property
    def status(self) -> str:
        """``pass``, ``fail``, ``inconclusive`` (ran, undecided) or ``skip`` (did not run)."""
        if self.passed is None:
            return "inconclusive" if self.inconclusive else "skip"
        return "pass" if self.passed else "fail"

    @property
    def text(self) -> str:
        """The message and, when there is one, the fix: what the console and report show."""
        return f"{self.message} Fix: {self.fix}" if self.fix else self.message

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status
        return d


class SanityCheckFailed(KerasdiagError):
    """A sanity stage failed and ``sanity.fail_fast`` is on: the run stops before training."""

    def __init__(self, result: StageResult):
        self.result = result
        super().__init__(f"sanity stage '{result.name}' failed: {result.text}")
