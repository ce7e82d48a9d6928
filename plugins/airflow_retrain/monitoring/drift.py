"""Drift of a scored population against the champion's training snapshot, prediction drift and realised
performance, and the decision whether the data moved enough to retrain.

The statistics are the data gate's (:func:`~airflow_retrain.gates.data.column_psi`,
:func:`~airflow_retrain.gates.data.column_ks`): the same numbers mean the same thing before training and
after promotion. Unlike the gate (which fails closed), monitoring records a statistic it cannot compute
as ``None`` with the reason and never counts it as drift: a constant or all-NaN column in the population
is reported, not a reason to retrain.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_retrain.gates.base import finite_or_none
from airflow_retrain.gates.data import column_ks, column_psi, psi, psi_bins

if TYPE_CHECKING:
    import pandas as pd


def drift_asset_uri(pipeline: str) -> str:
    """The Airflow Asset a drift-triggered retrain request updates; the retrain DAG is scheduled on it."""
    return f"x-retrain://{pipeline}/drift"


def drift_trigger(context: Any, pipeline: str) -> dict[str, Any] | None:
    """Why this run of the retrain DAG was started by drift, from the drift Asset events that triggered it.

    Read through the Task SDK context (``triggering_asset_events``: the events the run consumed); the
    newest event's ``extra`` is what ``request_retrain`` wrote. A run started by its cron, by hand or by a dbt
    Asset has no drift event: ``None``.

    :return: ``{"kind": "drift", "reason", "scoring_dag_id", "scoring_run_id", "champion_version",
        "monitoring_run_id", "requested_at", "events"}`` or ``None``.
    """
    from airflow.sdk import Asset

    accessor = context.get("triggering_asset_events") if hasattr(context, "get") else None
    if not accessor:
        return None
    try:
        events = list(accessor.get(Asset(drift_asset_uri(pipeline))) or [])
    except (KeyError, TypeError, ValueError):
        return None
    if not events:
        return None
    latest = max(events, key=lambda e: e.timestamp)
    extra = dict(latest.extra or {})
    return {
        "kind": "drift",
        "reason": str(extra.get("reason") or "drift Asset updated (no reason recorded)"),
        "scoring_dag_id": latest.source_dag_id or f"score_{pipeline}",
        "scoring_run_id": extra.get("scoring_run_id") or latest.source_run_id,
        "champion_version": extra.get("champion_version"),
        "monitoring_run_id": extra.get("monitoring_run_id"),
        "requested_at": latest.timestamp.isoformat(),
        "events": len(events),
    }


#: Edges of the score histogram kept as the prediction-drift reference (scores are probabilities).
SCORE_EDGES = [i / 10 for i in range(1, 10)]


@dataclass(frozen=True)
class Thresholds:
    """The spec's ``monitoring.thresholds`` as plain values (what the operator carries)."""

    psi_max: float | None = 0.2
    ks_max: float | None = None
    drifted_share: float = 0.0
    prediction_psi_max: float | None = 0.2
    metric_drop_max: float | None = None
    min_rows: int = 100
    min_labelled_rows: int = 100

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thresholds:
        if unknown := sorted(set(data) - set(cls.__dataclass_fields__)):
            raise ValueError(f"monitoring thresholds: unknown field(s) {', '.join(unknown)}")
        return cls(**data)


@dataclass
class DriftReport:
    """Per-feature statistics and what crossed a threshold."""

    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    drifted: list[str] = field(default_factory=list)
    drifted_share: float | None = None
    prediction_psi: float | None = None
    score_bins: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_drift(snapshot: dict[str, Any], population: pd.DataFrame, thresholds: Thresholds) -> DriftReport:
    """PSI (and KS ``D`` for numeric features) of every feature of ``snapshot`` in ``population``."""
    report = DriftReport()
    columns = snapshot.get("columns", {})
    features = [c for c, s in columns.items() if s.get("kind") in ("numeric", "categorical")]
    for column in features:
        reference = columns[column]
        entry: dict[str, Any] = {"kind": reference.get("kind"), "psi": None, "ks": None, "drifted": False}
        if column not in population.columns:
            entry["note"] = "missing from the scoring population"
            report.features[column] = entry
            continue
        series = population[column]
        if series.isna().all():
            entry["note"] = "every value is null"
        elif series.nunique(dropna=True) == 1:
            entry["note"] = "constant"
        if thresholds.psi_max is not None:
            entry["psi"] = finite_or_none(column_psi(reference, series))
        if thresholds.ks_max is not None and reference.get("kind") == "numeric":
            entry["ks"] = finite_or_none(column_ks(reference, series))
        reasons = []
        if entry["psi"] is not None and entry["psi"] > thresholds.psi_max:
            reasons.append(f"PSI {entry['psi']:.3f} > {thresholds.psi_max:g}")
        if entry["ks"] is not None and thresholds.ks_max is not None and entry["ks"] > thresholds.ks_max:
            reasons.append(f"KS D {entry['ks']:.3f} > {thresholds.ks_max:g}")
        if entry["psi"] is None and entry["ks"] is None and "note" not in entry:
            entry["note"] = "no statistic could be computed (the snapshot holds no bins for it)"
        if reasons:
            entry["drifted"] = True
            entry["reason"] = ", ".join(reasons)
            report.drifted.append(column)
        report.features[column] = entry
    report.notes = [f"{c}: {e['note']}" for c, e in report.features.items() if e.get("note")]
    measured = [c for c, e in report.features.items() if e["psi"] is not None or e["ks"] is not None]
    report.drifted_share = len(report.drifted) / len(measured) if measured else None
    return report


def score_bins(scores: Any) -> list[float]:
    """Frequencies of scores in ten equal-width bins of [0, 1] (NaN scores are left out)."""
    import numpy as np

    values = np.asarray(scores, dtype="float64")
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return []
    return [c / len(values) for c in psi_bins(values, SCORE_EDGES)]


def prediction_psi(reference: list[float] | None, current: list[float]) -> float | None:
    """PSI of the score histogram against the reference histogram; ``None`` without either."""
    if not reference or not current or len(reference) != len(current):
        return None
    return finite_or_none(psi(reference, current))


@dataclass
class Decision:
    """Whether a monitoring run crossed a threshold, and why (one reason per crossing)."""

    crossed: bool
    reasons: list[str]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "no threshold crossed"


def decide(
    report: DriftReport, rows: int, thresholds: Thresholds, realised: dict[str, Any] | None = None
) -> Decision:
    """Which thresholds a monitoring run crossed. Fewer than ``min_rows`` scored rows decide nothing."""
    if rows < thresholds.min_rows:
        return Decision(False, [])
    reasons = []
    share = report.drifted_share
    if report.drifted and share is not None and share > thresholds.drifted_share:
        detail = ", ".join(f"{c} ({report.features[c]['reason']})" for c in report.drifted[:5])
        more = f" and {len(report.drifted) - 5} more" if len(report.drifted) > 5 else ""
        reasons.append(
            f"feature drift in {len(report.drifted)} of {len(report.features)} features "
            f"(share {share:.0%} > {thresholds.drifted_share:.0%}): {detail}{more}"
        )
    p = report.prediction_psi
    if p is not None and thresholds.prediction_psi_max is not None and p > thresholds.prediction_psi_max:
        reasons.append(f"prediction drift: PSI of the scores {p:.3f} > {thresholds.prediction_psi_max:g}")
    if realised and realised.get("drop") is not None and thresholds.metric_drop_max is not None:
        drop = realised["drop"]
        if drop > thresholds.metric_drop_max and math.isfinite(drop):
            reasons.append(
                f"realised {realised['metric']} {realised['value']:.4f} is {drop:.4f} below the champion's holdout "
                f"{realised['champion_value']:.4f} (max drop {thresholds.metric_drop_max:g}, "
                f"{realised['rows']} labelled rows)"
            )
    return Decision(bool(reasons), reasons)
