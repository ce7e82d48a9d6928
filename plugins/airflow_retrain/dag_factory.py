"""Spec -> DAG: prepare > dbt build > export > train > register > gate > promote, then teardown + report.

``dags/retrain.py`` calls :func:`build_dags` and nothing else. Only light modules are imported here (the
operators import mlflow, pandas, duckdb and dbt lazily, when a task runs), so parsing stays cheap.

A spec that fails validation must not take down the other pipelines' DAGs, and must still show up as an
import error naming the spec file and field. Airflow 3 marks *every* DAG of a file that has an import
error as stale (hidden, never scheduled), so the two jobs live in two DAG files: ``dags/retrain.py``
calls :func:`build_dags`, which builds the valid specs' DAGs and skips broken ones; and
``dags/retrain_spec_check.py`` calls :func:`raise_spec_errors`, whose exception becomes that file's import
error, naming each broken spec file and field. That file has no DAGs to lose.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG

from airflow_retrain.operators.dataset import ExportTrainingDatasetOperator
from airflow_retrain.operators.dbt import DbtBuildOperator
from airflow_retrain.operators.gates import MetricGateOperator
from airflow_retrain.operators.registry import (
    MirrorToSageMakerOperator,
    PromoteModelOperator,
    PromotionApprovalOperator,
    RegisterModelOperator,
    RollbackModelOperator,
)
from airflow_retrain.operators.report import RunReportOperator
from airflow_retrain.operators.teardown import PrepareRunOperator, TeardownRunOperator
from airflow_retrain.operators.training import TrainModelOperator
from airflow_retrain.spec import PipelineSpec, SpecError, load_specs

log = logging.getLogger(__name__)

STAGES = ["prepare_run", "dbt_build", "export_dataset", "train", "register", "gate_metrics", "promote", "teardown"]


def _doc_md(spec: PipelineSpec) -> str:
    gates = "\n".join(
        f"| `{m}` | {t.min if t.min is not None else ''} | {t.max if t.max is not None else ''} |"
        for m, t in spec.gates.metrics.items()
    )
    return f"""### {spec.name}: scheduled retraining
{spec.description}

Spec: `{spec.source_path}`. Registered model: `{spec.registry.model_name}`; `champion` moves only when every
gate passes and the candidate beats it on `{spec.registry.primary_metric}` by at least
{spec.registry.min_improvement}.

1. `dbt_build`: `dbt build --select {' '.join(spec.dbt.select)}` (dbt tests are data-quality evidence)
2. `export_dataset`: `{spec.dataset.feature_table}` to Parquet train/holdout ({spec.dataset.holdout_fraction:.0%} holdout)
3. `train`: `{spec.training.entry_point}` on the `{spec.training.backend}` backend ({spec.training.resources.instance_type})
4. `register`: MLflow run + new model version
5. `gate_metrics`: thresholds below; a missing or NaN metric fails
6. `promote`: move `champion`, with an audit trail on the versions
7. `teardown` (always runs): stop leftover jobs, remove scratch, report compute and cost; `report`: run summary

| metric | min | max |
|---|---|---|
{gates}
"""


def build_dag(spec: PipelineSpec) -> DAG:
    """Build the retraining DAG of one validated spec."""
    start = spec.start_date if spec.start_date.tzinfo else spec.start_date.replace(tzinfo=UTC)
    res = spec.training.resources
    hyperparameters: dict[str, Any] = {
        **spec.training.hyperparameters,
        "target_column": spec.dataset.target_column,
        "id_column": spec.dataset.id_column,
    }
    if res.gpu == "none":
        hyperparameters.setdefault("device", "cpu")
    common = {"pipeline": spec.name}
    with DAG(
        dag_id=spec.dag_id,
        description=spec.description or f"Retrain {spec.registry.model_name}",
        schedule=spec.schedule,
        start_date=start,
        catchup=spec.catchup,
        max_active_runs=1,  # one run per pipeline at a time: promotions never race within a pipeline
        tags=["retrain", spec.name, *spec.tags],
        doc_md=_doc_md(spec),
        default_args={"owner": spec.owner, "retries": spec.retries, "retry_delay": timedelta(minutes=1)},
    ) as dag:
        prepare = PrepareRunOperator(task_id="prepare_run", spec=spec.to_dict(), retries=0, **common)
        dbt = DbtBuildOperator(
            task_id="dbt_build",
            project_dir=str(spec.path(spec.dbt.project_dir)),
            select=list(spec.dbt.select),
            exclude=list(spec.dbt.exclude),
            target=spec.dbt.target,
            warehouse_conn_id=spec.warehouse_connection_id,
            **common,
        )
        export = ExportTrainingDatasetOperator(
            task_id="export_dataset",
            relations=dbt.output["relations"],
            feature_table=spec.dataset.feature_table,
            target_column=spec.dataset.target_column,
            id_column=spec.dataset.id_column,
            holdout_fraction=spec.dataset.holdout_fraction,
            min_rows=spec.dataset.min_rows,
            warehouse_conn_id=spec.warehouse_connection_id,
            **common,
        )
        train = TrainModelOperator(
            task_id="train",
            entry_point=str(spec.path(spec.training.entry_point)),
            channels=export.output["channels"],
            hyperparameters=hyperparameters,
            backend=spec.training.backend,
            instance_type=res.instance_type,
            instance_count=res.instance_count,
            max_runtime_seconds=res.max_runtime_seconds,
            gpu=res.gpu,
            hourly_price_usd=res.hourly_price_usd,
            execution_timeout=timedelta(seconds=res.max_runtime_seconds + 600),
            **common,
        )
        register = RegisterModelOperator(
            task_id="register",
            model_name=spec.registry.model_name,
            training=train.output,
            dataset=export.output,
            experiment=spec.registry.experiment or f"retrain/{spec.name}",
            flavor=spec.registry.flavor,
            params_to_log={
                "hyperparameters": hyperparameters,
                "spec.path": spec.source_path,
                "dbt.select": " ".join(spec.dbt.select),
            },
            gates=["metrics"],
            mlflow_conn_id=spec.registry.connection_id,
            **common,
        )
        gate = MetricGateOperator(
            task_id="gate_metrics",
            thresholds={m: t.model_dump() for m, t in spec.gates.metrics.items()},
            metrics=train.output["metrics"],
            candidate=register.output,
            mlflow_conn_id=spec.registry.connection_id,
            **common,
        )
        registry = spec.registry
        lease = {"lease_wait_seconds": registry.lease.wait_seconds, "lease_settle_seconds": registry.lease.settle_seconds}
        promotion = {
            "candidate": register.output,
            "primary_metric": registry.primary_metric,
            "greater_is_better": registry.greater_is_better,
            "min_improvement": registry.min_improvement,
            "required_gates": ["metrics"],
            "mlflow_conn_id": registry.connection_id,
            **lease,
            **common,
        }
        before_promote = [gate]
        approval = None
        if registry.approval.required:
            decide = PromoteModelOperator(task_id="decide_promotion", mode="decide", **promotion)
            approval_task = PromotionApprovalOperator(
                task_id="approve_promotion",
                decision=decide.output,
                response_timeout=timedelta(minutes=registry.approval.timeout_minutes),
                retries=0,
            )
            approval = approval_task.output
            gate >> decide >> approval_task
            before_promote = [approval_task]
        promote = PromoteModelOperator(task_id="promote", approval=approval, **promotion)
        if registry.mirror.sagemaker is not None:
            mirror_spec = registry.mirror.sagemaker
            mirror = MirrorToSageMakerOperator(
                task_id="mirror_sagemaker",
                decision=promote.output,
                model_package_group=mirror_spec.model_package_group,
                aws_conn_id=mirror_spec.connection_id,
                region=mirror_spec.region,
                mlflow_conn_id=registry.connection_id,
                **common,
            )
            promote >> mirror
        teardown = TeardownRunOperator(
            task_id="teardown",
            backend=spec.training.backend,
            hourly_price_usd=res.hourly_price_usd,
            retries=2,
            **common,
        )
        report = RunReportOperator(task_id="report", stage_task_ids=STAGES[1:], retries=0, **common)

        prepare >> dbt >> export >> train >> register >> gate
        before_promote >> promote >> teardown >> report
        teardown.as_teardown(setups=prepare)
        report.as_teardown(setups=prepare)
    return dag


def _specs_dir() -> Path:
    if env := os.environ.get("RETRAIN_SPECS_DIR"):
        return Path(env)
    root = Path(os.environ.get("RETRAIN_HOME", Path(__file__).resolve().parents[2]))
    return root / "include" / "pipelines"


def build_dags(namespace: dict[str, Any] | None = None, specs_dir: str | os.PathLike | None = None) -> dict[str, DAG]:
    """Build a DAG per valid spec file and put them into ``namespace`` (a DAG file's ``globals()``).

    Broken specs are skipped here (and logged); :func:`raise_spec_errors` reports them.
    """
    loaded = load_specs(specs_dir or _specs_dir())
    dags = {spec.dag_id: build_dag(spec) for spec in loaded.specs}
    for error in loaded.errors.values():
        log.error("Skipping pipeline: %s", error)
    if namespace is not None:
        namespace.update(dags)
    return dags


def raise_spec_errors(specs_dir: str | os.PathLike | None = None) -> None:
    """Raise one :class:`SpecError` naming every broken spec file and field; return if all are valid."""
    errors = load_specs(specs_dir or _specs_dir()).errors
    if len(errors) == 1:
        raise next(iter(errors.values()))
    if errors:
        raise SpecError(", ".join(errors), [str(e) for e in errors.values()])


def build_rollback_dag(spec: PipelineSpec) -> DAG:
    """``rollback_<name>``: manually restore the previous champion, or a named version that passed its gates."""
    from airflow.sdk import Param

    registry = spec.registry
    with DAG(
        dag_id=f"rollback_{spec.name}",
        description=f"Roll {registry.model_name}@champion back (manual)",
        schedule=None,
        start_date=spec.start_date if spec.start_date.tzinfo else spec.start_date.replace(tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        tags=["retrain", "rollback", spec.name],
        render_template_as_native_obj=True,
        params={
            "version": Param(None, type=["null", "integer"], minimum=1,
                             description="version to restore; empty: the champion before the current one"),
            "reason": Param(type="string", minLength=3, maxLength=1000,
                            description="why (required; recorded in the promotion history)"),
        },
        doc_md=f"""### Roll back `{registry.model_name}@champion`
Trigger with `version` empty to restore the champion before the current one (read from the promotion
history in MLflow), or with a version number that once passed its gates. The move happens under the
model's promotion lease and is recorded in the history with `reason`. Pipeline spec: `{spec.source_path}`.
""",
        default_args={"owner": spec.owner, "retries": 2, "retry_delay": timedelta(seconds=30)},
    ) as dag:
        RollbackModelOperator(
            task_id="rollback",
            model_name=registry.model_name,
            version="{{ params.version }}",
            reason="{{ params.reason }}",
            mlflow_conn_id=registry.connection_id,
            lease_wait_seconds=registry.lease.wait_seconds,
            lease_settle_seconds=registry.lease.settle_seconds,
            pipeline=spec.name,
        )
    return dag


def build_rollback_dags(namespace: dict[str, Any] | None = None, specs_dir: str | os.PathLike | None = None) -> dict[str, DAG]:
    """A rollback DAG per valid spec; a spec whose DAG cannot be built is logged and skipped, never fatal."""
    dags: dict[str, DAG] = {}
    for spec in load_specs(specs_dir or _specs_dir()).specs:
        try:
            dag = build_rollback_dag(spec)
        except Exception as e:  # noqa: BLE001 - one broken spec must not hide the other DAGs
            log.error("Skipping rollback DAG of %s: %s", spec.source_path, e)
            continue
        dags[dag.dag_id] = dag
    if namespace is not None:
        namespace.update(dags)
    return dags
