"""Realised performance: outcomes that arrived later, joined by id with the champion's latest scores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_retrain.gates.model import score

if TYPE_CHECKING:
    import pandas as pd


class LabelSourceError(ValueError):
    """A label source that cannot be used; the message names the source and the column."""


def check_labels(frame: pd.DataFrame, source: str, id_column: str, label_column: str, time_column: str) -> None:
    """Refuse a label source whose columns are missing or of the wrong type, naming the column."""
    import pandas as pd

    for column in (id_column, label_column, time_column):
        if column not in frame.columns:
            raise LabelSourceError(f"label source {source}: column {column!r} not found (columns: {list(frame.columns)})")
    labels = frame[label_column]
    if not (pd.api.types.is_bool_dtype(labels) or pd.api.types.is_numeric_dtype(labels)):
        raise LabelSourceError(
            f"label source {source}: column {label_column!r} is {labels.dtype} (e.g. {labels.dropna().head(3).tolist()}); "
            "it must be a 0/1 outcome"
        )
    values = set(labels.dropna().astype(float).unique().tolist())
    if not values <= {0.0, 1.0}:
        raise LabelSourceError(
            f"label source {source}: column {label_column!r} is not a 0/1 outcome (values e.g. {sorted(values)[:5]})"
        )
    times = frame[time_column]
    if not (pd.api.types.is_datetime64_any_dtype(times) or times.map(lambda v: hasattr(v, "year")).all()):
        raise LabelSourceError(
            f"label source {source}: column {time_column!r} is {times.dtype}; it must be a timestamp or date"
        )


def realised_metric(
    labels: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    id_column: str,
    label_column: str,
    time_column: str,
    metric: str,
    champion_value: float | None,
    greater_is_better: bool,
    min_rows: int,
) -> dict[str, Any]:
    """The primary metric of the champion's latest scores against the outcomes that arrived.

    The newest outcome per id counts; outcomes for ids that were never scored are counted and left out.
    :return: ``metric``, ``value`` (``None`` with ``note`` when it cannot be computed), ``rows`` (labelled
        and scored), ``unknown_ids``, ``champion_value`` and ``drop`` (positive: worse than the holdout).
    """
    latest = (
        labels.dropna(subset=[label_column])
        .sort_values(time_column)
        .drop_duplicates(subset=[id_column], keep="last")
        .assign(**{id_column: lambda f: f[id_column].astype(str)})
    )
    joined = latest.merge(predictions[["id", "score"]], left_on=id_column, right_on="id", how="left")
    unknown = int(joined["score"].isna().sum())
    joined = joined.dropna(subset=["score"])
    result: dict[str, Any] = {
        "metric": metric, "value": None, "rows": len(joined), "unknown_ids": unknown,
        "champion_value": champion_value, "drop": None,
    }
    if len(joined) < min_rows:
        result["note"] = f"{len(joined)} labelled scored rows, fewer than min_labelled_rows={min_rows}"
        return result
    value = score(metric, joined[label_column].astype(float).to_numpy(), joined["score"].to_numpy())
    if value is None:
        result["note"] = f"{metric} cannot be computed on these outcomes (e.g. a single class)"
        return result
    result["value"] = value
    if champion_value is not None:
        result["drop"] = (champion_value - value) if greater_is_better else (value - champion_value)
    return result
