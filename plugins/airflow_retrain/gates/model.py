"""Model gates, run after a candidate is registered.

- ``metrics``: the candidate's reported holdout metrics within absolute bounds
  (:class:`~airflow_retrain.gates.metrics.MetricThresholdGate`).
- ``champion`` (:class:`ChampionGate`): the current champion is loaded from the registry and scored on the
  *same* new holdout as the candidate; the candidate must beat it by ``min_improvement``. Without a
  champion the gate passes and says so. The comparison (both values, delta, margin) is the evidence the
  promotion step reads; a champion's stored metric from an older holdout is never compared.
- ``slices`` (:class:`SliceGate`): the spec's metric per slice of the holdout (each level of each named
  column; numeric columns with many levels by quartile), candidate against champion on the same rows; no
  slice may regress by more than ``max_regression``.
- ``efficiency`` (:class:`EfficiencyGate`): model size and batch scoring latency within budget.

Scores are plain arrays here; loading models from MLflow lives in :mod:`airflow_retrain.gates._mlflow`.
A missing, NaN or non-numeric value fails closed. Module-level imports are stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_retrain.gates.base import Check, Gate, Verdict, combine, finite_or_none

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: Metrics the model gates can compute from labels and scores, with their direction
#: (``True``: greater is better). They match the churn training script's definitions.
SCORABLE_METRICS: dict[str, bool] = {
    "roc_auc": True,
    "pr_auc": True,
    "accuracy": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "log_loss": False,
    "brier": False,
}
THRESHOLD = 0.5


def score(metric: str, y_true: Any, proba: Any) -> float | None:
    """``metric`` of scores ``proba`` against 0/1 labels ``y_true``; ``None`` where it is undefined
    (one class only for AUCs, no rows) or not finite."""
    import warnings

    import numpy as np
    from sklearn import metrics as m

    y = np.asarray(y_true, dtype="int64")
    p = np.asarray(proba, dtype="float64")
    if len(y) == 0 or len(p) != len(y) or not np.all(np.isfinite(p)):
        return None  # a NaN/inf score is no evidence: fail closed
    pred = (p >= THRESHOLD).astype("int64")
    single_class = len(np.unique(y)) < 2
    calculators = {
        "roc_auc": lambda: None if single_class else m.roc_auc_score(y, p),
        "pr_auc": lambda: None if y.sum() == 0 else m.average_precision_score(y, p),
        "accuracy": lambda: m.accuracy_score(y, pred),
        "precision": lambda: m.precision_score(y, pred, zero_division=np.nan),
        "recall": lambda: m.recall_score(y, pred, zero_division=np.nan),
        "f1": lambda: m.f1_score(y, pred, zero_division=np.nan),
        "log_loss": lambda: m.log_loss(y, p, labels=[0, 1]),
        "brier": lambda: float(np.mean((p - y) ** 2)),
    }
    if metric not in calculators:
        raise ValueError(f"metric {metric!r} cannot be computed by the model gates; known: {', '.join(SCORABLE_METRICS)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return finite_or_none(calculators[metric]())


def improvement(candidate: float, champion: float, greater_is_better: bool) -> float:
    """How much better ``candidate`` is than ``champion`` (positive = better), in the metric's units."""
    return candidate - champion if greater_is_better else champion - candidate


# ------------------------------------------------------------------------------------------ champion


@dataclass
class ScoredHoldout:
    """One holdout, scored by the candidate and (when there is one) the champion.

    :param labels: the 0/1 labels.
    :param candidate: the candidate's scores (probability of the positive class).
    :param champion: the champion's scores on the same rows; ``None`` when there is no champion.
    :param frame: the holdout rows (for slicing).
    :param champion_version: the champion's version, ``None`` without one.
    :param champion_error: why the champion could not be loaded or scored, if it could not.
    """

    labels: Any
    candidate: Any
    frame: pd.DataFrame | None = None
    champion: Any = None
    candidate_version: str | None = None
    champion_version: str | None = None
    champion_error: str | None = None
    champion_stored_value: float | None = None


class ChampionGate(Gate):
    """The candidate must beat the champion, re-scored on the same holdout, by ``min_improvement``.

    The verdict's ``details`` is the decision data promotion reads: ``decision`` is ``no_champion``,
    ``beats``, ``does_not_beat`` or ``error`` (the champion could not be loaded or scored: fails closed).

    :param metric: the metric compared; one of :data:`SCORABLE_METRICS`.
    :param min_improvement: the least improvement (in the metric's units, direction-aware).
    :param greater_is_better: direction; default: the metric's known direction.
    """

    name = "champion"

    def __init__(self, metric: str, min_improvement: float = 0.0, greater_is_better: bool | None = None):
        if metric not in SCORABLE_METRICS:
            raise ValueError(f"champion gate: metric {metric!r} cannot be computed; known: {', '.join(SCORABLE_METRICS)}")
        self.metric = metric
        self.min_improvement = float(min_improvement)
        self.greater_is_better = SCORABLE_METRICS[metric] if greater_is_better is None else bool(greater_is_better)

    def evaluate(self, evidence: ScoredHoldout) -> Verdict:  # type: ignore[override]
        details: dict[str, Any] = {
            "metric": self.metric,
            "greater_is_better": self.greater_is_better,
            "min_improvement": self.min_improvement,
            "holdout_rows": len(evidence.labels),
            "candidate_version": evidence.candidate_version,
            "champion_version": evidence.champion_version,
            "candidate_value": None,
            "champion_value": None,
            "champion_stored_value": evidence.champion_stored_value,
            "delta": None,
        }
        name = f"{self.metric}.delta"

        def decided(decision: str, passed: bool, reason: str, observed: float | None = None,
                    threshold: float | None = self.min_improvement) -> Verdict:
            details["decision"] = decision
            return combine(self.name, [Check(name, observed, threshold, None, passed, reason)], details,
                           what="champion gate")

        candidate_value = score(self.metric, evidence.labels, evidence.candidate)
        details["candidate_value"] = candidate_value
        if candidate_value is None:
            return decided("error", False, f"candidate {self.metric} on the holdout is not a finite number")
        if evidence.champion_error:
            return decided("error", False, f"champion v{evidence.champion_version}: {evidence.champion_error}")
        if evidence.champion is None:
            return decided("no_champion", True,
                           f"no champion yet: candidate {self.metric}={candidate_value:.4f} is the first")
        if evidence.champion_version is not None and evidence.champion_version == evidence.candidate_version:
            details.update(champion_value=candidate_value, delta=0.0)
            return decided("already_champion", True, f"v{evidence.candidate_version} is already the champion",
                           observed=0.0, threshold=None)
        champion_value = score(self.metric, evidence.labels, evidence.champion)
        details["champion_value"] = champion_value
        if champion_value is None:
            return decided("error", False, f"champion v{evidence.champion_version} {self.metric} on the holdout "
                           "is not a finite number")
        delta = improvement(candidate_value, champion_value, self.greater_is_better)
        beats = delta > 0 and delta >= self.min_improvement
        details["delta"] = delta
        reason = (
            f"candidate {self.metric}={candidate_value:.4f} {'beats' if beats else 'does not beat'} champion "
            f"v{evidence.champion_version} {self.metric}={champion_value:.4f} re-scored on the same holdout "
            f"({len(evidence.labels)} rows) by the required {self.min_improvement:g} (delta {delta:+.4f})"
        )
        return decided("beats" if beats else "does_not_beat", beats, reason, observed=delta)


# ------------------------------------------------------------------------------------------ slices


def slice_masks(frame: pd.DataFrame, column: str, max_levels: int = 20) -> list[tuple[str, Any]]:
    """``(label, boolean mask)`` per slice of ``column``: one per level, or quartile bins of a numeric
    column with more than ``max_levels`` levels. Nulls are a slice of their own."""
    import pandas as pd

    series = frame[column]
    present = series.dropna()
    masks: list[tuple[str, Any]] = []
    if pd.api.types.is_numeric_dtype(series) and present.nunique() > max_levels:
        bins = pd.qcut(present, 4, duplicates="drop")
        for interval in bins.cat.categories:
            masks.append((f"{column}={interval}", series.index.isin(bins[bins == interval].index)))
    else:
        for level in sorted(present.unique().tolist(), key=str):
            label = int(level) if isinstance(level, float) and level.is_integer() else level
            masks.append((f"{column}={label}", (series == level).to_numpy()))
    if series.isna().any():
        masks.append((f"{column}=null", series.isna().to_numpy()))
    return masks


class SliceGate(Gate):
    """No slice of the holdout may regress by more than ``max_regression`` against the champion.

    :param columns: the slice columns (levels, or quartiles of a many-valued numeric column).
    :param metric: the metric per slice (one of :data:`SCORABLE_METRICS`).
    :param max_regression: the largest allowed drop (direction-aware) of a slice's metric.
    :param min_rows: slices with fewer holdout rows are recorded as skipped.
    """

    name = "slices"

    def __init__(self, columns: list[str], metric: str, max_regression: float, min_rows: int = 30,
                 greater_is_better: bool | None = None):
        if metric not in SCORABLE_METRICS:
            raise ValueError(f"slice gate: metric {metric!r} cannot be computed; known: {', '.join(SCORABLE_METRICS)}")
        if not columns:
            raise ValueError("slice gate needs at least one column")
        self.columns = list(columns)
        self.metric = metric
        self.max_regression = float(max_regression)
        self.min_rows = int(min_rows)
        self.greater_is_better = SCORABLE_METRICS[metric] if greater_is_better is None else greater_is_better

    def evaluate(self, evidence: ScoredHoldout) -> Verdict:  # type: ignore[override]
        import numpy as np

        frame = evidence.frame
        checks: list[Check] = []
        slices: list[dict[str, Any]] = []
        labels = np.asarray(evidence.labels)
        cand = np.asarray(evidence.candidate, dtype="float64")
        champ = None if evidence.champion is None else np.asarray(evidence.champion, dtype="float64")
        if evidence.champion_error:
            checks.append(Check("champion", None, None, None, False,
                                f"champion v{evidence.champion_version}: {evidence.champion_error}"))
        for column in self.columns:
            if frame is None or column not in frame.columns:
                checks.append(Check(f"{column}", None, None, self.max_regression, False,
                                    f"slice column {column!r} is not in the holdout"))
                continue
            for label, mask in slice_masks(frame.reset_index(drop=True), column):
                rows = int(np.sum(mask))
                cand_value = score(self.metric, labels[mask], cand[mask]) if rows else None
                champ_value = score(self.metric, labels[mask], champ[mask]) if champ is not None and rows else None
                entry = {"slice": label, "rows": rows, "candidate": cand_value, "champion": champ_value}
                slices.append(entry)
                check_name = f"{label}.{self.metric}"
                if rows < self.min_rows:
                    checks.append(Check(check_name, None, None, self.max_regression, True,
                                        f"skipped: {label} has {rows} holdout rows < min {self.min_rows}"))
                    continue
                if cand_value is None and champ_value is None:
                    checks.append(Check(check_name, None, None, self.max_regression, True,
                                        f"skipped: {self.metric} is undefined on {label} (one class only)"))
                    continue
                if cand_value is None:
                    checks.append(Check(check_name, None, None, self.max_regression, False,
                                        f"candidate {self.metric} on {label} is not a finite number"))
                    continue
                if champ is None:  # recorded for the next comparison; nothing to regress from
                    checks.append(Check(check_name, cand_value, None, None, True,
                                        f"{label}: candidate {self.metric}={cand_value:.4f}; no champion to compare"))
                    continue
                if champ_value is None:
                    checks.append(Check(check_name, None, None, self.max_regression, True,
                                        f"skipped: champion {self.metric} is undefined on {label}"))
                    continue
                regression = -improvement(cand_value, champ_value, self.greater_is_better)
                entry["regression"] = regression
                ok = regression <= self.max_regression
                checks.append(Check(
                    f"{label}.{self.metric}.regression", regression, None, self.max_regression, ok,
                    f"{label} ({rows} rows): {self.metric} {cand_value:.4f} vs champion {champ_value:.4f}, "
                    f"regression {regression:+.4f} {'<=' if ok else '>'} max {self.max_regression:g}",
                ))
        details = {"metric": self.metric, "max_regression": self.max_regression, "slices": slices,
                   "champion_version": evidence.champion_version}
        return combine(self.name, checks, details, what="slice gate")


# ------------------------------------------------------------------------------------------ efficiency


@dataclass
class EfficiencyEvidence:
    """:param model_bytes: size of the candidate's model files; :param latency_ms: median time to score
    ``rows`` rows in one batch (``None`` when scoring failed; ``error`` says why)."""

    model_bytes: int | None
    latency_ms: float | None
    rows: int
    error: str | None = None


class EfficiencyGate(Gate):
    """Model size and batch scoring latency within the spec's budget.

    :param max_model_mb: largest model size in MiB (``None``: recorded, not bounded).
    :param max_latency_ms: slowest median batch scoring time in milliseconds.
    """

    name = "efficiency"

    def __init__(self, max_model_mb: float | None = None, max_latency_ms: float | None = None):
        self.max_model_mb = max_model_mb
        self.max_latency_ms = max_latency_ms

    def evaluate(self, evidence: EfficiencyEvidence) -> Verdict:  # type: ignore[override]
        size_mb = None if evidence.model_bytes is None else evidence.model_bytes / 2**20
        checks = [
            self._check("model_mb", size_mb, self.max_model_mb, "model size", "MiB"),
            self._check(f"latency_ms.{evidence.rows}_rows", finite_or_none(evidence.latency_ms), self.max_latency_ms,
                        f"batch scoring latency ({evidence.rows} rows)", "ms", evidence.error),
        ]
        details = {"model_bytes": evidence.model_bytes, "latency_ms": evidence.latency_ms, "rows": evidence.rows}
        return combine(self.name, checks, details, what="efficiency gate")

    @staticmethod
    def _check(name: str, value: float | None, limit: float | None, what: str, unit: str,
               error: str | None = None) -> Check:
        if value is None:
            return Check(name, None, None, limit, False, f"{what} could not be measured" + (f": {error}" if error else ""))
        if limit is None:
            return Check(name, value, None, None, True, f"{what} {value:.3g} {unit} (no budget)")
        ok = value <= limit
        return Check(name, value, None, limit, ok, f"{what} {value:.3g} {unit} {'<=' if ok else '>'} max {limit:g} {unit}")


def holdout_arrays(frame: pd.DataFrame, target_column: str, id_column: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The holdout's feature columns and labels (the model's input excludes the id and the label)."""
    labels = frame[target_column].to_numpy(dtype="int64")
    features = frame.drop(columns=[c for c in (id_column, target_column) if c in frame.columns])
    return features, labels


def stored_metric(metrics: Mapping[str, Any], metric: str) -> float | None:
    return finite_or_none(metrics.get(metric))
