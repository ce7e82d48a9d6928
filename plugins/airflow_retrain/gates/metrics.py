"""MetricThresholdGate: every configured metric must exist, be a finite number, and lie within bounds.

It fails closed: a metric the training run did not report, or reported as NaN/inf/null/non-number,
fails the gate with a message naming the metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from airflow_retrain.gates.base import Check, Gate, Verdict


def finite_metric(value: Any) -> float | None:
    """``value`` as a float if it is a finite real number, else None.

    Only ints and floats count (numpy scalars included): a bool is not 1.0, a string is not parsed, and
    NaN, +-inf, None, lists and objects are not numbers -- a gate on such a metric fails closed.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_numpy_real(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _is_numpy_real(value: Any) -> bool:
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return kind in ("i", "u", "f") and getattr(value, "shape", None) == ()


_as_finite = finite_metric


class MetricThresholdGate(Gate):
    """:param thresholds: metric name -> ``{"min": x, "max": y}`` (either may be omitted)."""

    name = "metrics"

    def __init__(self, thresholds: Mapping[str, Mapping[str, float | None]]):
        if not thresholds:
            raise ValueError("MetricThresholdGate needs at least one threshold")
        self.thresholds = {k: dict(v) for k, v in thresholds.items()}

    def evaluate(self, evidence: Mapping[str, Any]) -> Verdict:
        """:param evidence: the candidate's metrics, name -> value."""
        checks = []
        for metric, bounds in self.thresholds.items():
            lo, hi = bounds.get("min"), bounds.get("max")
            raw = evidence.get(metric, None) if isinstance(evidence, Mapping) else None
            value = _as_finite(raw)
            if metric not in evidence:
                checks.append(Check(metric, None, lo, hi, False, f"metric {metric!r} is missing"))
                continue
            if value is None:
                checks.append(Check(metric, None, lo, hi, False, f"metric {metric!r} is not a finite number ({raw!r})"))
                continue
            if lo is not None and value < lo:
                checks.append(Check(metric, value, lo, hi, False, f"{metric} {value:.4f} < min {lo}"))
            elif hi is not None and value > hi:
                checks.append(Check(metric, value, lo, hi, False, f"{metric} {value:.4f} > max {hi}"))
            else:
                checks.append(Check(metric, value, lo, hi, True, f"{metric} {value:.4f} within bounds"))
        failed = [c for c in checks if not c.passed]
        if failed:
            message = "metric gate failed: " + "; ".join(c.reason for c in failed)
        else:
            message = "metric gate passed: " + "; ".join(c.reason for c in checks)
        return Verdict(gate=self.name, passed=not failed, message=message, checks=checks)
