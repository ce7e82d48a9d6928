"""Verdict: what a gate decided, with the numbers and thresholds that decided it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    """One comparison inside a gate: ``observed`` against ``min``/``max``."""

    name: str
    observed: float | None
    min: float | None
    max: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class Verdict:
    gate: str
    passed: bool
    message: str
    checks: list[Check] = field(default_factory=list)

    @property
    def numbers(self) -> dict[str, float | None]:
        return {c.name: c.observed for c in self.checks}

    @property
    def thresholds(self) -> dict[str, dict[str, float | None]]:
        return {c.name: {"min": c.min, "max": c.max} for c in self.checks}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "numbers": self.numbers, "thresholds": self.thresholds}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        return cls(
            gate=data["gate"],
            passed=bool(data["passed"]),
            message=data["message"],
            checks=[Check(**c) for c in data.get("checks", [])],
        )


class Gate(ABC):
    name: str

    @abstractmethod
    def evaluate(self, evidence: dict[str, Any]) -> Verdict: ...
