"""Data gates, run on the exported dataset before any training is paid for.

:func:`profile_table` turns the rows of a split into a *snapshot*: summary statistics per column (type,
count, null rate, quantiles and decile bins for numeric columns, level frequencies for categorical ones,
the label rate), never the data itself. The snapshot of a candidate's train split is stored with its
model version, so a later run can measure drift against the champion's training data.

:class:`DataGate` compares a new dataset with

- the feature model's enforced dbt contract (column names and type families; skipped, saying why, for a
  model without ``contract.enforced``), the previous run's schema and the champion's training snapshot's;
- a minimum row count and a change band against the last run whose data gate passed;
- null rates: a rise over the champion's training snapshot, and absolute limits only where the spec states them;
- a label-rate band;
- the champion's training snapshot: PSI per feature (numeric columns binned on the snapshot's deciles,
  categorical ones by level) and, for numeric features, the two-sample Kolmogorov-Smirnov *statistic*
  ``D`` (``scipy.stats.ks_2samp`` against a sample drawn from the snapshot's 201 quantiles; ``ks_max``
  bounds ``D``, not a p-value: p-values of thousands of rows flag shifts too small to matter).

Every check fails closed: a statistic that cannot be computed (NaN, no rows) fails with the reason.
Module-level imports are stdlib only; numpy/pandas/pyarrow/scipy load when a gate runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from airflow_retrain.gates.base import Check, Gate, Verdict, combine, finite_or_none

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from airflow_retrain.spec.models import DataGateSpec

SNAPSHOT_FORMAT = 1
QUANTILES = 201  # 0.5 % steps: the KS statistic against the snapshot is exact to about 0.005
PSI_BINS = 10
MAX_CATEGORICAL_LEVELS = 10  # an integer column with at most this many levels is treated as categorical
MAX_STORED_LEVELS = 50
PSI_EPSILON = 1e-4
OTHER_LEVEL = "__other__"

# dbt contract data types -> the family a Parquet column must belong to.
_DBT_TYPE_FAMILIES = {
    "int": ("integer", "int", "bigint", "smallint", "tinyint", "hugeint", "int2", "int4", "int8", "ubigint",
            "uinteger", "usmallint", "utinyint", "serial", "bigserial"),
    "float": ("double precision", "double", "float", "float4", "float8", "real", "numeric", "decimal"),
    "string": ("varchar", "text", "string", "char", "character", "character varying", "bpchar", "uuid"),
    "bool": ("boolean", "bool"),
    "datetime": ("timestamp", "timestamptz", "date", "time", "datetime", "timestamp with time zone",
                 "timestamp without time zone"),
}


def dbt_type_family(data_type: str | None) -> str | None:
    """The family (``int``, ``float``, ``string``, ``bool``, ``datetime``) of a dbt contract type, or
    ``None`` when it is unknown (then only the column's presence is checked)."""
    if not data_type:
        return None
    base = data_type.strip().lower().split("(")[0].strip()
    for family, names in _DBT_TYPE_FAMILIES.items():
        if base in names:
            return family
    return None


def arrow_type_family(arrow_type: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_temporal(arrow_type):
        return "datetime"
    return str(arrow_type)


# ------------------------------------------------------------------------------------------ profile


def _numeric_series(df: pd.DataFrame, column: str) -> pd.Series:
    import pandas as pd

    return pd.to_numeric(df[column], errors="coerce").astype("float64")


def _is_categorical(series: pd.Series, family: str) -> bool:
    if family in ("string", "bool"):
        return True
    if family == "int":
        return series.dropna().nunique() <= MAX_CATEGORICAL_LEVELS
    return family not in ("float", "int")


def _level(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def psi_bins(values: Any, edges: list[float]) -> list[int]:
    """Counts of ``values`` in the bins ``(-inf, e1], (e1, e2], ..., (ek, inf)``."""
    import numpy as np

    index = np.searchsorted(np.asarray(edges, dtype="float64"), np.asarray(values, dtype="float64"), side="left")
    return np.bincount(index, minlength=len(edges) + 1).tolist()


def profile_table(
    table: pa.Table | pd.DataFrame, *, target_column: str | None = None, id_column: str | None = None
) -> dict[str, Any]:
    """Summary statistics of a split (the snapshot stored with a model version). JSON-able.

    :param table: the rows (an Arrow table keeps the exact column types; a DataFrame is converted).
    :param target_column: the label column; its rate is recorded, and it is not profiled as a feature.
    :param id_column: excluded from the per-column statistics (it is unique by construction).
    """
    import numpy as np
    import pyarrow as pa

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    df = table.to_pandas()
    rows = len(df)
    snapshot: dict[str, Any] = {
        "format": SNAPSHOT_FORMAT,
        "rows": rows,
        "target_column": target_column,
        "id_column": id_column,
        "schema": {f.name: str(f.type) for f in table.schema},
        "label_rate": None,
        "columns": {},
    }
    if target_column and target_column in df.columns and rows:
        snapshot["label_rate"] = finite_or_none(_numeric_series(df, target_column).mean())
    for f in table.schema:
        name = f.name
        series = df[name]
        nulls = int(series.isna().sum())
        family = arrow_type_family(f.type)
        stats: dict[str, Any] = {
            "dtype": str(f.type),
            "family": family,
            "count": rows - nulls,
            "null_rate": nulls / rows if rows else None,
        }
        if name in (target_column, id_column):
            stats["kind"] = "label" if name == target_column else "id"
            snapshot["columns"][name] = stats
            continue
        if _is_categorical(series, family):
            freq = series.dropna().map(_level).value_counts(normalize=False)
            top = freq.head(MAX_STORED_LEVELS)
            total = rows - nulls
            levels = {str(k): int(v) / total for k, v in top.items()} if total else {}
            if total and len(freq) > MAX_STORED_LEVELS:
                levels[OTHER_LEVEL] = int(freq.iloc[MAX_STORED_LEVELS:].sum()) / total
            stats.update(kind="categorical", levels=levels)
        else:
            values = _numeric_series(df, name).dropna().to_numpy()
            stats["kind"] = "numeric"
            if len(values):
                quantiles = np.quantile(values, np.linspace(0, 1, QUANTILES)).tolist()
                edges = sorted(set(np.quantile(values, np.linspace(0, 1, PSI_BINS + 1)[1:-1]).tolist()))
                counts = psi_bins(values, edges)
                stats.update(
                    mean=float(values.mean()),
                    std=float(values.std()),
                    min=float(values.min()),
                    max=float(values.max()),
                    quantiles=quantiles,
                    bins={"edges": edges, "freq": [c / len(values) for c in counts]},
                )
        snapshot["columns"][name] = stats
    return snapshot


# ------------------------------------------------------------------------------------------ drift


def psi(expected: list[float], actual: list[float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two distributions over the same buckets (each summing to ~1)."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, epsilon), max(a, epsilon)
        total += (a - e) * math.log(a / e)
    return total


def column_psi(reference: Mapping[str, Any], series: pd.Series) -> float | None:
    """PSI of ``series`` (new rows) against one column of a snapshot; nulls are a bucket of their own."""
    rows = len(series)
    if rows == 0:
        return None
    new_null = float(series.isna().mean())
    ref_null = float(reference.get("null_rate") or 0.0)
    present = series.dropna()
    if reference.get("kind") == "categorical":
        levels = dict(reference.get("levels") or {})
        counts = present.map(_level).value_counts()
        known = [k for k in levels if k != OTHER_LEVEL]
        other = int(counts[~counts.index.isin(known)].sum())
        expected = [levels[k] * (1 - ref_null) for k in known] + [levels.get(OTHER_LEVEL, 0.0) * (1 - ref_null)]
        actual = [int(counts.get(k, 0)) / rows for k in known] + [other / rows]
    else:
        bins = reference.get("bins")
        if not bins:
            return None
        import pandas as pd

        values = pd.to_numeric(present, errors="coerce").dropna()
        counts = psi_bins(values.to_numpy(), bins["edges"])
        expected = [f * (1 - ref_null) for f in bins["freq"]]
        actual = [c / rows for c in counts]
    return psi([*expected, ref_null], [*actual, new_null])


def column_ks(reference: Mapping[str, Any], series: pd.Series) -> float | None:
    """KS statistic ``D`` of the new numeric values against the snapshot's quantile function."""
    import pandas as pd
    from scipy.stats import ks_2samp

    quantiles = reference.get("quantiles")
    values = pd.to_numeric(series, errors="coerce").dropna().to_numpy()
    if not quantiles or len(values) == 0:
        return None
    return float(ks_2samp(values, quantiles).statistic)


# ------------------------------------------------------------------------------------------ the gate


@dataclass(frozen=True)
class DataGateConfig:
    """The thresholds of :class:`DataGate`: the spec's ``gates.data`` block, resolved by :meth:`from_spec`.

    The one shape of a data gate's settings between the spec and the gate: the DAG factory builds it from
    the spec, the operator carries it as :meth:`to_dict` (a templated, serialised field) and reads it back
    with :meth:`from_dict`.

    :param contract: column -> dbt ``data_type`` of the feature model's enforced contract; ``None``: none known.
    :param match_contract: check the contract; when ``contract`` is ``None`` it is read at run time from the
        manifest of ``dbt_project_dir`` (model ``feature_model``), and ``contract_note`` says why it is skipped.
    :param match_previous: compare the schema with the previous run's; ``match_champion`` with the
        champion's training snapshot's.
    :param min_rows: fewest rows (train + holdout) a run may have.
    :param max_row_change: largest relative change of the row count against the last passed run.
    :param max_null_rate: largest null rate of any column (``None``: no absolute limit); ``null_rate_columns``
        per column; ``max_null_rate_increase``: largest rise over the champion's snapshot.
    :param label_rate_min: smallest label rate; ``label_rate_max`` the largest.
    :param psi_max: largest PSI of a feature against the champion's snapshot; ``None``: not checked.
    :param ks_max: largest KS statistic ``D`` of a numeric feature; ``None``: not checked.
    :param on_missing_snapshot: what a drift check does when no champion snapshot exists.
    :param drift_columns: features to check for drift; default every feature of the snapshot.
    :param on_drift_trigger: ``warn``: in a retrain the drift monitor requested, drift over the bound is
        recorded and passes (saying so); ``fail``: it fails as in any run.
    """

    contract: dict[str, str | None] | None = None
    match_contract: bool = False
    dbt_project_dir: str | None = None
    feature_model: str | None = None
    contract_note: str | None = None
    match_previous: bool = True
    match_champion: bool = False
    min_rows: int | None = None
    max_row_change: float | None = None
    max_null_rate: float | None = None
    null_rate_columns: dict[str, float] = field(default_factory=dict)
    max_null_rate_increase: float | None = None
    label_rate_min: float | None = None
    label_rate_max: float | None = None
    psi_max: float | None = None
    ks_max: float | None = None
    on_missing_snapshot: str = "fail"
    drift_columns: list[str] | None = None
    on_drift_trigger: str = "warn"

    @classmethod
    def from_spec(
        cls, data: DataGateSpec, *, min_rows: int, dbt_project_dir: str | None = None, feature_model: str | None = None
    ) -> DataGateConfig:
        """Resolve a spec's ``gates.data`` block.

        :param data: the ``gates.data`` block.
        :param min_rows: ``dataset.min_rows``, the fewest rows when ``gates.data.min_rows`` is not set.
        :param dbt_project_dir: the dbt project whose manifest holds ``feature_model``'s contract (read at run
            time, after ``dbt_build`` refreshed the manifest).
        """
        drift = data.drift
        return cls(
            match_contract=data.schema_.match_contract,
            dbt_project_dir=dbt_project_dir,
            feature_model=feature_model,
            match_previous=data.schema_.match_previous,
            match_champion=data.schema_.match_champion,
            min_rows=data.min_rows if data.min_rows is not None else min_rows,
            max_row_change=data.max_row_change,
            max_null_rate=data.max_null_rate.default,
            null_rate_columns=dict(data.max_null_rate.columns),
            max_null_rate_increase=data.max_null_rate.max_increase,
            label_rate_min=data.label_rate.min if data.label_rate else None,
            label_rate_max=data.label_rate.max if data.label_rate else None,
            psi_max=drift.psi_max if drift else None,
            ks_max=drift.ks_max if drift else None,
            on_missing_snapshot=drift.on_missing_snapshot if drift else "fail",
            drift_columns=list(drift.columns) if drift and drift.columns else None,
            on_drift_trigger=drift.on_drift_trigger if drift else "warn",
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form the operator carries (:meth:`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataGateConfig:
        """Read :meth:`to_dict` back; a key that is not a field is an error, never silently dropped."""
        if unknown := sorted(set(data) - set(cls.__dataclass_fields__)):
            raise ValueError(f"data gate config: unknown field(s) {', '.join(unknown)}")
        return cls(**data)


@dataclass
class DataEvidence:
    """What a data gate looks at.

    :param frame: the new rows (train + holdout) for null rates, label rate and the row count.
    :param train: the new train split's rows, compared with the champion's snapshot for drift.
    :param profile: :func:`profile_table` of the new train split (its schema is compared).
    :param previous: the profile of the last run whose data gate passed; ``None`` on the first run.
    :param previous_rows: that run's total row count.
    :param snapshot: the champion's training snapshot; ``None`` when there is none.
    :param snapshot_source: where the snapshot came from (shown in the evidence).
    :param drift_trigger: why the drift monitor requested this retrain; ``None``: it did not.
    """

    frame: pd.DataFrame
    train: pd.DataFrame
    profile: dict[str, Any]
    target_column: str
    id_column: str
    previous: dict[str, Any] | None = None
    previous_rows: int | None = None
    snapshot: dict[str, Any] | None = None
    snapshot_source: str | None = None
    drift_trigger: str | None = None


def _bound_check(name: str, value: float | None, lo: float | None, hi: float | None, what: str) -> Check:
    if value is None:
        return Check(name, None, lo, hi, False, f"{what} could not be computed")
    if lo is not None and value < lo:
        return Check(name, value, lo, hi, False, f"{what} {value:.4g} < min {lo:g}")
    if hi is not None and value > hi:
        return Check(name, value, lo, hi, False, f"{what} {value:.4g} > max {hi:g}")
    return Check(name, value, lo, hi, True, f"{what} {value:.4g} within bounds")


class DataGate(Gate):
    """Schema, volume, nulls, label balance and drift of a new dataset, as one ``data`` verdict."""

    name = "data"

    def __init__(self, config: DataGateConfig):
        self.config = config

    def evaluate(self, evidence: DataEvidence) -> Verdict:  # type: ignore[override]
        checks: list[Check] = []
        details: dict[str, Any] = {}
        checks += self._schema(evidence, details)
        checks += self._volume(evidence, details)
        checks += self._nulls(evidence)
        checks += self._label(evidence)
        checks += self._drift(evidence, details)
        return combine(self.name, checks, details, what="data gate")

    # -- schema -----------------------------------------------------------------------------------
    def _schema(self, ev: DataEvidence, details: dict[str, Any]) -> list[Check]:
        checks = []
        schema: dict[str, str] = ev.profile["schema"]
        families = {c: s.get("family") for c, s in ev.profile.get("columns", {}).items()}
        if self.config.contract is not None:
            problems = []
            for column, data_type in self.config.contract.items():
                if column not in schema:
                    problems.append(f"missing column {column!r}")
                    continue
                want = dbt_type_family(data_type)
                got = families.get(column)
                if want is not None and got != want:
                    problems.append(f"{column!r} is {schema[column]} ({got}), contract says {data_type} ({want})")
            problems += [f"column {c!r} is not in the contract" for c in schema if c not in self.config.contract]
            details["schema_contract_problems"] = problems
            reason = (
                f"schema differs from the dbt contract: {'; '.join(problems[:8])}"
                if problems
                else f"schema matches the dbt contract ({len(self.config.contract)} columns)"
            )
            checks.append(Check("schema.contract", float(len(problems)), None, 0.0, not problems, reason))
        elif self.config.match_contract:
            note = self.config.contract_note or "no dbt contract known for the feature model"
            details["schema_contract_skipped"] = note
            checks.append(Check("schema.contract", None, None, 0.0, True, f"skipped: {note}"))
        compared = []
        if self.config.match_previous:
            compared.append(("previous", "the previous run's", (ev.previous or {}).get("schema"), "no previous run"))
        if self.config.match_champion:
            where = f"the champion's training snapshot ({ev.snapshot_source})"
            compared.append(("champion", where, (ev.snapshot or {}).get("schema"), "no champion training snapshot"))
        for name, what, previous, missing in compared:
            if previous is None:
                checks.append(Check(f"schema.{name}", None, None, 0.0, True, f"skipped: {missing} to compare"))
                continue
            problems = [f"column {c!r} removed" for c in previous if c not in schema]
            problems += [f"column {c!r} added" for c in schema if c not in previous]
            problems += [
                f"{c!r} changed type {previous[c]} -> {schema[c]}" for c in schema if c in previous and previous[c] != schema[c]
            ]
            details[f"schema_{name}_problems"] = problems
            field_name = f"gates.data.schema.match_{name}"
            reason = (
                f"schema differs from {what} ({field_name}): {'; '.join(problems[:8])}"
                if problems
                else f"schema matches {what}"
            )
            checks.append(Check(f"schema.{name}", float(len(problems)), None, 0.0, not problems, reason))
        return checks

    # -- volume -----------------------------------------------------------------------------------
    def _volume(self, ev: DataEvidence, details: dict[str, Any]) -> list[Check]:
        checks = []
        rows = len(ev.frame)
        details["rows"] = rows
        if self.config.min_rows is not None:
            lo = float(self.config.min_rows)
            ok = rows >= lo
            checks.append(Check("rows", float(rows), lo, None, ok, f"{rows} rows {'>=' if ok else '<'} min {lo:g}"))
        if self.config.max_row_change is not None:
            band = self.config.max_row_change
            if not ev.previous_rows:
                checks.append(
                    Check("rows.change", None, None, band, True, "skipped: no earlier passed run to compare the row count")
                )
            else:
                change = abs(rows - ev.previous_rows) / ev.previous_rows
                details["previous_rows"] = ev.previous_rows
                ok = change <= band
                checks.append(
                    Check(
                        "rows.change",
                        change,
                        None,
                        band,
                        ok,
                        f"row count {rows} vs {ev.previous_rows} in the last passed run: change {change:.1%} "
                        f"{'<=' if ok else '>'} max {band:.1%}",
                    )
                )
        return checks

    # -- nulls ------------------------------------------------------------------------------------
    def _nulls(self, ev: DataEvidence) -> list[Check]:
        """Absolute limits where the spec states them; otherwise a rise over the champion's snapshot."""
        cfg = self.config
        checks = []
        if len(ev.frame) == 0:
            return [Check("nulls", None, None, cfg.max_null_rate, False, "no rows to measure null rates on")]
        rates = ev.frame.isna().mean()
        reference = (ev.snapshot or {}).get("columns") or {}
        for column in ev.frame.columns:
            rate = float(rates[column])
            if column in cfg.null_rate_columns or cfg.max_null_rate is not None:
                field_name = "gates.data.max_null_rate." + (
                    f"columns.{column}" if column in cfg.null_rate_columns else "default"
                )
                limit = cfg.null_rate_columns.get(column, cfg.max_null_rate)
                ok = rate <= limit
                checks.append(Check(f"null_rate.{column}", rate, None, limit, ok,
                                    f"{column} null rate {rate:.2%} {'<=' if ok else '>'} {limit:.2%} ({field_name})"))  # fmt: skip
            before = (reference.get(column) or {}).get("null_rate")
            if cfg.max_null_rate_increase is not None and before is not None:
                rise, limit = rate - float(before), cfg.max_null_rate_increase
                ok = rise <= limit
                checks.append(Check(
                    f"null_rate_increase.{column}", rise, None, limit, ok,
                    f"{column} null rate {rate:.2%} vs {float(before):.2%} in the champion's training snapshot: rise "
                    f"{rise:+.2%} {'<=' if ok else '>'} {limit:.2%} (gates.data.max_null_rate.max_increase)",
                ))  # fmt: skip
        if cfg.max_null_rate_increase is not None and ev.snapshot is None:
            checks.append(Check("null_rate_increase", None, None, cfg.max_null_rate_increase, True,
                                "skipped: no champion training snapshot to compare null rates with; only the limits "
                                "the spec states (gates.data.max_null_rate.default/columns) apply"))  # fmt: skip
        for column in cfg.null_rate_columns:
            if column not in ev.frame.columns:
                checks.append(Check(f"null_rate.{column}", None, None, None, False,
                                    f"gates.data.max_null_rate.columns.{column}: the dataset has no column {column!r} "
                                    f"(its columns: {', '.join(map(str, ev.frame.columns))})"))  # fmt: skip
        return checks

    # -- label --------------------------------------------------------------------------------------
    def _label(self, ev: DataEvidence) -> list[Check]:
        lo, hi = self.config.label_rate_min, self.config.label_rate_max
        if lo is None and hi is None:
            return []
        if ev.target_column not in ev.frame.columns:
            return [Check("label_rate", None, lo, hi, False, f"label column {ev.target_column!r} is missing")]
        rate = finite_or_none(_numeric_series(ev.frame, ev.target_column).mean())
        return [_bound_check("label_rate", rate, lo, hi, f"label rate of {ev.target_column!r}")]

    # -- drift --------------------------------------------------------------------------------------
    def _drift(self, ev: DataEvidence, details: dict[str, Any]) -> list[Check]:
        cfg = self.config
        if cfg.psi_max is None and cfg.ks_max is None:
            return []
        details["snapshot"] = ev.snapshot_source
        if ev.snapshot is None:
            ok = cfg.on_missing_snapshot == "pass"
            reason = (
                "skipped: no champion training snapshot yet (drift.on_missing_snapshot: pass)"
                if ok
                else "no champion training snapshot to measure drift against (drift.on_missing_snapshot: fail)"
            )
            return [Check("drift.snapshot", None, None, None, ok, reason)]
        checks = []
        reference_columns = ev.snapshot.get("columns", {})
        features = cfg.drift_columns or [
            c for c, s in reference_columns.items() if s.get("kind") in ("numeric", "categorical")
        ]
        for column in features:
            reference = reference_columns.get(column)
            if reference is None or column not in ev.train.columns:
                where = "the champion's snapshot" if reference is None else "the new data"
                named = "gates.data.drift.columns: " if cfg.drift_columns else ""
                checks.append(Check(f"psi.{column}", None, None, cfg.psi_max, False, f"{named}{column!r} is missing from {where}"))
                continue
            series = ev.train[column]
            if cfg.psi_max is not None:
                value = finite_or_none(column_psi(reference, series))
                checks.append(_bound_check(f"psi.{column}", value, None, cfg.psi_max, f"PSI of {column}"))
            if cfg.ks_max is not None and reference.get("kind") == "numeric":
                value = finite_or_none(column_ks(reference, series))
                checks.append(_bound_check(f"ks.{column}", value, None, cfg.ks_max, f"KS D of {column}"))
        if ev.drift_trigger and cfg.on_drift_trigger == "warn":
            # The monitor asked for this retrain because the data moved: measured drift is evidence, not a
            # veto (schema, nulls, rows and the model gates still decide). A column that cannot be measured
            # at all still fails.
            note = "allowed: a drift-triggered retrain (gates.data.drift.on_drift_trigger: warn)"
            checks = [replace(c, passed=True, reason=f"{c.reason}; {note}")
                      if not c.passed and c.observed is not None else c for c in checks]
        return checks


def read_split(location: str) -> pa.Table:
    """All ``*.parquet`` files of a split, from a local folder or a URI (``file://``, ``s3://``, ...),
    read through Airflow's ``ObjectStoragePath`` (connections, never process-wide credentials)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(location)
    if path.is_file():
        files = [path]
    else:
        files = sorted(
            (p for p in path.rglob("*.parquet") if not any(part.startswith((".", "_")) for part in p.parts[-1:])),
            key=str,
        )
    if not files:
        raise FileNotFoundError(f"no *.parquet files under {location}")
    tables = []
    for file in files:
        with file.open("rb") as handle:
            tables.append(pq.read_table(handle))
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
