"""Verdict: what a gate decided, with the numbers and thresholds that decided it.

A :class:`Verdict` is the evidence a reviewer reads: one :class:`Check` per comparison (observed value
against ``min``/``max``), plus ``details`` for what is not a single number (the champion comparison, the
schema differences). :func:`evidence_table` renders verdicts as the one table a task log shows, and
:func:`verdict_metrics` turns them into MLflow metric names (``gate.<gate>.<check>``).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
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
    details: dict[str, Any] = field(default_factory=dict)

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
            details=dict(data.get("details") or {}),
        )

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


class Gate(ABC):
    name: str

    @abstractmethod
    def evaluate(self, evidence: dict[str, Any]) -> Verdict: ...


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` for a missing, NaN, infinite, boolean or non-numeric one."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def combine(gate: str, checks: list[Check], details: dict[str, Any] | None = None, what: str = "") -> Verdict:
    """One verdict from its checks: it passes only if every check passed (and there is at least one)."""
    failed = [c for c in checks if not c.passed]
    label = what or f"{gate} gate"
    if not checks:
        return Verdict(gate, False, f"{label} failed: nothing was checked", [], dict(details or {}))
    if failed:
        message = f"{label} failed: " + "; ".join(c.reason for c in failed)
    else:
        message = f"{label} passed: " + "; ".join(c.reason for c in checks[:6]) + (
            f"; ... ({len(checks)} checks)" if len(checks) > 6 else ""
        )
    return Verdict(gate, not failed, message, checks, dict(details or {}))


def _threshold_text(check: Check) -> str:
    if check.min is not None and check.max is not None:
        return f"[{check.min:g}, {check.max:g}]"
    if check.min is not None:
        return f">= {check.min:g}"
    if check.max is not None:
        return f"<= {check.max:g}"
    return "-"


def _observed_text(check: Check) -> str:
    if check.observed is None:
        return "-" if check.passed else "missing"
    return f"{check.observed:.4g}"


def evidence_table(verdicts: Iterable[Verdict], advisory: Iterable[str] = ()) -> str:
    """Render verdicts as one fixed-width table: ``gate | check | observed | threshold | result``.

    :param advisory: gates whose failed checks decide without failing the task (the champion comparison:
        a candidate that does not beat the champion is a kept champion, not an error); shown ``NOT BETTER``.
    """
    advisory = set(advisory)
    rows = [("gate", "check", "observed", "threshold", "result")]
    for verdict in verdicts:
        failed = "NOT BETTER" if verdict.gate in advisory else "FAIL"
        if not verdict.checks:
            rows.append((verdict.gate, "-", "-", "-", "PASS" if verdict.passed else failed))
        for check in verdict.checks:
            result = "PASS" if check.passed else failed
            if check.passed and check.reason.startswith("skipped"):
                result = "SKIP"
            rows.append((verdict.gate, check.name, _observed_text(check), _threshold_text(check), result))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


_METRIC_KEY = re.compile(r"[^A-Za-z0-9_\-. /:]")


def verdict_metrics(verdict: Verdict) -> dict[str, float]:
    """MLflow metrics of a verdict: ``gate.<gate>.<check>`` -> observed (finite values only) and
    ``gate.<gate>.passed`` -> 1/0."""
    metrics = {f"gate.{verdict.gate}.passed": 1.0 if verdict.passed else 0.0}
    for check in verdict.checks:
        value = finite_or_none(check.observed)
        if value is not None:
            metrics[_METRIC_KEY.sub("_", f"gate.{verdict.gate}.{check.name}")[:250]] = value
    return metrics
