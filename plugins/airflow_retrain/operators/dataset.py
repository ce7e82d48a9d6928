"""ExportTrainingDatasetOperator: the feature mart becomes a run-scoped, split Parquet dataset."""

from __future__ import annotations

import hashlib
import shutil
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_retrain import artifacts
from airflow_retrain.hooks.warehouse import WarehouseHook
from airflow_retrain.operators.base import RetrainBaseOperator

if TYPE_CHECKING:
    import pandas as pd


def _examples(values, limit: int = 5) -> str:
    return ", ".join(repr(v) for v in list(values)[:limit])


def check_training_frame(df: pd.DataFrame, relation: str, target_column: str, id_column: str, min_rows: int) -> None:
    """Refuse a feature table training cannot use, naming the column and the problem.

    These are data errors: retrying cannot fix them, so they raise :class:`AirflowFailException`.
    The label must be binary (0/1 or booleans) without nulls; the ids present, unique and hashable.
    """
    import pandas as pd

    for column in (id_column, target_column):
        if column not in df.columns:
            raise AirflowFailException(f"{relation}: column {column!r} not found (columns: {list(df.columns)})")
    if len(df) < min_rows:
        raise AirflowFailException(f"{relation}: {len(df)} rows, fewer than dataset.min_rows={min_rows}")
    ids = df[id_column]
    if (nulls := int(ids.isna().sum())) > 0:
        raise AirflowFailException(f"{relation}: id column {id_column!r} has {nulls} NULL value(s)")
    try:
        duplicated = ids[ids.duplicated(keep=False)]
    except TypeError:
        raise AirflowFailException(
            f"{relation}: id column {id_column!r} holds {ids.dtype} values that cannot be compared "
            f"(e.g. {_examples(ids)}); use a scalar id"
        ) from None
    if not duplicated.empty:
        raise AirflowFailException(
            f"{relation}: id column {id_column!r} is not unique: {duplicated.nunique()} id(s) repeat, "
            f"e.g. {_examples(duplicated.unique())}"
        )
    target = df[target_column]
    if (nulls := int(target.isna().sum())) > 0:
        raise AirflowFailException(f"{relation}: target column {target_column!r} has {nulls} null value(s)")
    if not (pd.api.types.is_bool_dtype(target) or pd.api.types.is_numeric_dtype(target)):
        raise AirflowFailException(
            f"{relation}: target column {target_column!r} is {target.dtype} (values e.g. "
            f"{_examples(target.drop_duplicates())}); it must be a binary 0/1 label: map it in the dbt model"
        )
    labels = set(target.astype(float).unique().tolist())
    if not labels <= {0.0, 1.0}:
        raise AirflowFailException(
            f"{relation}: target column {target_column!r} is not a binary 0/1 label "
            f"(values e.g. {_examples(sorted(labels))})"
        )


class ExportTrainingDatasetOperator(RetrainBaseOperator):
    """Read the feature table dbt just built and write ``train``/``test`` channels as Parquet to the run's
    prefix in the artifact store: ``<run>/dataset/{train,test}/part-0.parquet``.

    The holdout split is by a hash of the id column, so an example stays on the same side of the split
    from one week's run to the next and a champion and a challenger are measured on comparable rows.

    :param relations: model name -> relation, as returned by :class:`DbtBuildOperator`.
    :param feature_table: the dbt model to export.
    :param target_column: label column; must be present and binary-or-numeric without nulls.
    :param id_column: unique example id.
    :param holdout_fraction: share of ids in the ``test`` channel.
    :param min_rows: fewer rows than this fails the task.
    :return: channel URIs (the ``train``/``test`` prefixes, what training reads), the Parquet files' URIs,
        row counts, label rates and a content fingerprint.
    """

    template_fields = ("relations", "feature_table")

    def __init__(
        self,
        *,
        relations: dict[str, str] | Any,
        feature_table: str,
        target_column: str,
        id_column: str,
        holdout_fraction: float = 0.2,
        min_rows: int = 100,
        warehouse_conn_id: str | None = WarehouseHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.relations = relations
        self.feature_table = feature_table
        self.target_column = target_column
        self.id_column = id_column
        self.holdout_fraction = holdout_fraction
        self.min_rows = min_rows
        self.warehouse_conn_id = warehouse_conn_id

    @cached_property
    def hook(self) -> WarehouseHook:
        return WarehouseHook(self.warehouse_conn_id)

    def execute(self, context) -> dict[str, Any]:
        name = self.feature_table.split(".")[-1]
        relation = (self.relations or {}).get(name)
        if not relation:
            raise AirflowFailException(
                f"feature table {name!r} was not built by the dbt stage (built: {sorted(self.relations or {})}); "
                "add it to dbt.select in the pipeline spec"
            )
        if self.target_column == self.id_column:
            raise AirflowFailException(
                f"dataset.target_column and dataset.id_column are both {self.id_column!r}: the label cannot be the id"
            )
        df = self.hook.read_table(relation)
        check_training_frame(df, relation, self.target_column, self.id_column, self.min_rows)

        df = df.sort_values(self.id_column, kind="stable").reset_index(drop=True)
        buckets = df[self.id_column].astype(str).map(
            lambda v: int.from_bytes(hashlib.sha256(v.encode()).digest()[:4], "big") % 10_000
        )
        is_test = buckets < int(self.holdout_fraction * 10_000)
        run = self.run_identity(context)
        base = self.artifact_store.run_path(run.dag_id, run.run_key) / "dataset"
        local = run.scratch_dir() / "export" / f"try-{context['ti'].try_number}"
        channels = {}
        files = {}
        rows = {}
        rates = {}
        for channel, part in (("train", df[~is_test]), ("test", df[is_test])):
            if part.empty:
                raise AirflowFailException(f"{relation}: the {channel} split is empty")
            local_file = local / channel / "part-0.parquet"
            local_file.parent.mkdir(parents=True, exist_ok=True)
            part.to_parquet(local_file, index=False)
            files[channel] = artifacts.upload(local_file, base / channel / "part-0.parquet")
            channels[channel] = artifacts.to_uri(base / channel)
            rows[channel] = len(part)
            rates[channel] = round(float(part[self.target_column].mean()), 4)
        shutil.rmtree(local, ignore_errors=True)
        fingerprint = hashlib.sha256(
            df.to_csv(index=False).encode()  # content, not file bytes: stable across writers
        ).hexdigest()[:16]
        self.log.info(
            "Exported %s to %s: %s rows, label rate %s, fingerprint %s",
            relation, artifacts.to_uri(base), rows, rates, fingerprint,
        )
        context["ti"].xcom_push(key="channels", value=channels)
        # train compares it with the champion's (skip when unchanged): its own key, as the channels
        context["ti"].xcom_push(key="fingerprint", value=fingerprint)
        return {
            "relation": relation,
            "channels": channels,
            "files": files,
            "rows": rows,
            "label_rate": rates,
            "columns": list(df.columns),
            "id_column": self.id_column,
            "target_column": self.target_column,
            "fingerprint": fingerprint,
        }
