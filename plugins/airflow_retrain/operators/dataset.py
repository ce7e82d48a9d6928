"""ExportTrainingDatasetOperator: the feature mart becomes a run-scoped, split Parquet dataset."""

from __future__ import annotations

import hashlib
import shutil
from functools import cached_property
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_retrain import artifacts
from airflow_retrain.hooks.warehouse import WarehouseHook
from airflow_retrain.operators.base import RetrainBaseOperator


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
        df = self.hook.read_table(relation)
        for column in (self.id_column, self.target_column):
            if column not in df.columns:
                raise AirflowFailException(f"{relation}: column {column!r} not found (columns: {list(df.columns)})")
        if len(df) < self.min_rows:
            raise AirflowFailException(f"{relation}: {len(df)} rows, fewer than dataset.min_rows={self.min_rows}")
        if df[self.target_column].isna().any():
            raise AirflowFailException(f"{relation}: target column {self.target_column!r} has nulls")
        if df[self.id_column].duplicated().any():
            raise AirflowFailException(f"{relation}: id column {self.id_column!r} is not unique")

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
