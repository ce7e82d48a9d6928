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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG

from airflow_retrain.operators.dataset import ExportTrainingDatasetOperator
from airflow_retrain.operators.dbt import DbtBuildOperator
from airflow_retrain.operators.gates import MetricGateOperator
from airflow_retrain.operators.registry import PromoteModelOperator, RegisterModelOperator
from airflow_retrain.operators.report import RunReportOperator
from airflow_retrain.operators.teardown import PrepareRunOperator, TeardownRunOperator
from airflow_retrain.operators.training import TrainModelOperator
from airflow_retrain.spec import PipelineSpec, SpecError, load_specs, retrain_home, spec_files

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
    """Build the retraining DAG of one validated spec.

    The DAG is not auto-registered: only the DAG file's namespace (see :func:`build_dags`) publishes it,
    so a DAG that fails half-way, or one built only to check it (:func:`raise_spec_errors`), never loads.
    """
    start = _start_date(spec)
    res = spec.training.resources
    hyperparameters: dict[str, Any] = {
        **spec.training.hyperparameters,
        "target_column": spec.dataset.target_column,
        "id_column": spec.dataset.id_column,
    }
    if res.gpu == "none":
        hyperparameters.setdefault("device", "cpu")
    common = {"pipeline": spec.name}
    if spec.artifacts.root:  # else resolved on the worker: RETRAIN_ARTIFACT_ROOT, or the state dir
        common.update(artifact_root=spec.artifacts.root, artifact_conn_id=spec.artifacts.connection_id)
    with DAG(
        dag_id=spec.dag_id,
        description=spec.description or f"Retrain {spec.registry.model_name}",
        schedule=spec.schedule,
        start_date=start,
        catchup=spec.catchup,
        max_active_runs=1,  # one run per pipeline at a time: promotions never race within a pipeline
        tags=["retrain", spec.name, *spec.tags],
        doc_md=_doc_md(spec),
        auto_register=False,
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
            **_pool(spec),
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
            **_pool(spec),
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
            **_training_environment(spec),
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
        promote = PromoteModelOperator(
            task_id="promote",
            candidate=register.output,
            primary_metric=spec.registry.primary_metric,
            greater_is_better=spec.registry.greater_is_better,
            min_improvement=spec.registry.min_improvement,
            required_gates=["metrics"],
            mlflow_conn_id=spec.registry.connection_id,
            **common,
        )
        teardown = TeardownRunOperator(
            task_id="teardown",
            backend=spec.training.backend,
            hourly_price_usd=res.hourly_price_usd,
            retries=2,
            **common,
        )
        report = RunReportOperator(task_id="report", stage_task_ids=STAGES[1:], retries=0, **common)

        prepare >> dbt >> export >> train >> register >> gate >> promote >> teardown >> report
        teardown.as_teardown(setups=prepare)
        report.as_teardown(setups=prepare)
    return dag


def _specs_dir() -> Path:
    """``RETRAIN_SPECS_DIR``, else ``<RETRAIN_HOME>/include/pipelines`` (see :func:`spec.retrain_home`)."""
    if env := os.environ.get("RETRAIN_SPECS_DIR"):
        return Path(env)
    root = retrain_home()
    if root is None:
        raise SpecError(
            "<RETRAIN_HOME>",
            [
                "<folder>: no project folder: set RETRAIN_HOME (or Airflow's [retrain] home) to the folder holding "
                f"include/pipelines/, or RETRAIN_SPECS_DIR to the specs folder; the package at {Path(__file__).parent} "
                "ships no specs"
            ],
        )
    return root / "include" / "pipelines"


def _check_specs_folder(directory: Path) -> SpecError | None:
    """A missing or empty specs folder is an error naming where it looked, never zero DAGs in silence."""
    where = f"{directory} (RETRAIN_SPECS_DIR={os.environ.get('RETRAIN_SPECS_DIR')!r}, RETRAIN_HOME={os.environ.get('RETRAIN_HOME')!r})"
    if not directory.is_dir():
        return SpecError(directory, [f"<folder>: the specs folder does not exist; looked in {where}"])
    if not spec_files(directory):
        return SpecError(directory, [f"<folder>: no *.yaml pipeline spec in the specs folder; looked in {where}"])
    return None


def _start_date(spec: PipelineSpec) -> datetime:
    """The spec's start date, aware: a naive one is read in the spec's ``timezone``."""
    import pendulum

    start = spec.start_date
    if start.tzinfo is None:
        return pendulum.instance(start, tz=pendulum.timezone(spec.timezone))
    return start


def _pool(spec: PipelineSpec) -> dict[str, Any]:
    """The warehouse pool of dbt and the export (one slot: the embedded DuckDB file has one writer)."""
    return {"pool": spec.pool} if spec.pool else {}


def _training_environment(spec: PipelineSpec) -> dict[str, Any]:
    """What the training backend adds to its allow-listed environment, from ``training.environment/env``."""
    config: dict[str, Any] = {}
    if spec.training.environment:
        config["pass_environment"] = list(spec.training.environment)
    if spec.training.env:
        config["environment"] = dict(spec.training.env)
    return {"backend_config": config} if config else {}


def _build_checked(spec: PipelineSpec) -> DAG:
    """Build one DAG and run the checks the DagBag runs before bagging it (timetable, setup/teardown)."""
    try:
        dag = build_dag(spec)
        dag.validate()
        dag.check_cycle()
    except SpecError:
        raise
    except Exception as e:  # noqa: BLE001 - the per-spec boundary: any error belongs to this spec only
        field = "schedule" if "Timetable" in type(e).__name__ else "<dag>"
        raise SpecError(spec.source_path, [f"{field}: the DAG cannot be built: {type(e).__name__}: {e}"]) from None
    return dag


def collect_pipelines(specs_dir: str | os.PathLike | None = None) -> tuple[dict[str, DAG], dict[str, SpecError]]:
    """Load every spec and build its DAG, each inside its own error boundary.

    :return: ``(dag_id -> DAG, spec file -> SpecError)``; never raises for a spec's fault.
    """
    try:
        directory = Path(specs_dir) if specs_dir else _specs_dir()
    except SpecError as e:
        return {}, {"<RETRAIN_HOME>": e}
    if (problem := _check_specs_folder(directory)) is not None:
        return {}, {str(directory): problem}
    try:
        loaded = load_specs(directory)
    except Exception as e:  # noqa: BLE001 - e.g. an unreadable specs folder
        return {}, {str(directory): SpecError(directory, [f"<folder>: cannot load specs: {type(e).__name__}: {e}"])}
    dags: dict[str, DAG] = {}
    errors = dict(loaded.errors)
    for spec in loaded.specs:
        try:
            dags[spec.dag_id] = _build_checked(spec)
        except SpecError as e:
            errors[spec.source_path] = e
    return dags, errors


def build_dags(namespace: dict[str, Any] | None = None, specs_dir: str | os.PathLike | None = None) -> dict[str, DAG]:
    """Build a DAG per valid spec file and put them into ``namespace`` (a DAG file's ``globals()``).

    Broken specs -- invalid, or failing while their DAG is built -- are skipped here (and logged);
    :func:`raise_spec_errors` reports them. This function does not raise for a spec's fault.
    """
    try:
        dags, errors = collect_pipelines(specs_dir)
    except Exception:  # noqa: BLE001 - dags/retrain.py must never become an import error
        log.exception("Building the retraining DAGs failed")
        return {}
    for error in errors.values():
        log.error("Skipping pipeline: %s", error)
    if namespace is not None:
        namespace.update(dags)
    return dags


def raise_spec_errors(specs_dir: str | os.PathLike | None = None) -> None:
    """Raise one :class:`SpecError` naming every broken spec file and field; return if all are valid."""
    errors = collect_pipelines(specs_dir)[1]
    if len(errors) == 1:
        raise next(iter(errors.values()))
    if errors:
        raise SpecError(", ".join(errors), [str(e) for e in errors.values()])
