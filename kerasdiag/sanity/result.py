"""The result every pre-training check returns (gradient check, initial loss, ...)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StageResult:
    """Outcome of one check: ``passed`` is None when the stage was skipped."""

    name: str
    passed: bool | None
    value: float | None = None
    expected: float | None = None
    message: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "skip" if self.passed is None else ("pass" if self.passed else "fail")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status
        return d
