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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG

from airflow_retrain.config import retrain_home
from airflow_retrain.gates.data import DataGateConfig
from airflow_retrain.operators.dataset import ExportTrainingDatasetOperator
from airflow_retrain.operators.dbt import DbtEvidenceGateOperator
from airflow_retrain.operators.gates import DataGateOperator, ModelGateOperator
from airflow_retrain.operators.registry_approval import PromotionApprovalOperator
from airflow_retrain.operators.registry_mirror import MirrorToSageMakerOperator
from airflow_retrain.operators.registry_promote import PromoteModelOperator
from airflow_retrain.operators.registry_register import RegisterModelOperator
from airflow_retrain.operators.registry_rollback import RollbackModelOperator
from airflow_retrain.operators.report import RunReportOperator
from airflow_retrain.operators.sweep import GpuTeardownSweepOperator
from airflow_retrain.operators.teardown import PrepareRunOperator, TeardownRunOperator
from airflow_retrain.operators.training import TrainModelOperator
from airflow_retrain.params import DBT_SELECT_PARAM, FORCE_PARAM, trigger_params
from airflow_retrain.registry.inputs import skip_unchanged
from airflow_retrain.spec.loader import load_specs, spec_files
from airflow_retrain.spec.models import AssetSchedule, PipelineSpec, SpecError
from airflow_retrain.teardown.policy import default_policy_path, load_policy

log = logging.getLogger(__name__)

STAGES = [
    "prepare_run", "dbt_build", "gate_dbt", "export_dataset", "gate_data", "train", "register", "gate_model", "promote", "teardown",
]


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

1. `dbt_build`: one `dbt build --select {' '.join(spec.dbt.select)}`; the `dbt` group shows each model with its tests; `gate_dbt`: test results + source freshness as a data-quality verdict
2. `export_dataset`: `{spec.dataset.feature_table}` to Parquet train/holdout ({spec.dataset.holdout_fraction:.0%} holdout)
3. `gate_data`: schema vs the dbt contract and the last run, row count, null rates, label rate, drift vs the
   champion's training snapshot; a failure stops the run before training
4. `train`: `{spec.training.entry_point}` on the `{spec.training.backend}` backend ({spec.training.resources.instance_type})
5. `register`: MLflow run + new model version
6. `gate_model`: thresholds below (a missing or NaN metric fails), the champion re-scored on the same
   holdout (`{spec.champion_metric}`, margin {spec.champion_min_improvement}), slices, efficiency
7. `promote`: move `champion`, with an audit trail on the versions
8. `teardown` (always runs): stop leftover jobs, remove scratch, report compute and cost; `report`: run summary

| metric | min | max |
|---|---|---|
{gates}
"""


def _data_gate_config(spec: PipelineSpec) -> DataGateConfig:
    """The spec's ``gates.data`` resolved; the feature model's dbt contract is read by ``gate_data`` at run
    time from the manifest ``dbt_build`` refreshed (a model added since the last parse has none cached yet)."""
    return DataGateConfig.from_spec(
        spec.gates.data,
        min_rows=spec.dataset.min_rows,
        dbt_project_dir=str(spec.path(spec.dbt.project_dir)),
        feature_model=spec.dataset.feature_table.split(".")[-1],
    )


def _backend_config(spec: PipelineSpec) -> dict[str, Any] | None:
    """The backend's settings from the spec block named after it (``training.sagemaker``), if any."""
    block = getattr(spec.training, spec.training.backend, None)
    config = block.model_dump(exclude_none=True) if block is not None else {}
    if spec.training.backend == "local":  # the allow-listed environment's additions (training.environment/env)
        config.update(_training_environment(spec).get("backend_config", {}))
    elif spec.training.spot:  # training.spot: the backend's own spot setting (managed spot, Spot VMs)
        config["spot"] = True
    return config or None


def _instance_type(spec: PipelineSpec) -> str:
    """The priced instance type: ``training.resources``, or the Vertex machine (+ accelerator)."""
    if spec.training.backend == "vertex" and spec.training.vertex is not None:
        from airflow_retrain.training.vertex_catalog import price_key

        vx = spec.training.vertex
        return price_key(vx.machine_type, vx.accelerator_type, vx.accelerator_count)
    return spec.training.resources.instance_type


def _instance_count(spec: PipelineSpec) -> int:
    if spec.training.backend == "vertex" and spec.training.vertex is not None:
        return spec.training.vertex.replica_count
    return spec.training.resources.instance_count


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
    backend_config = _backend_config(spec)
    with DAG(
        dag_id=spec.dag_id,
        description=spec.description or f"Retrain {spec.registry.model_name}",
        schedule=_dag_schedule(spec),
        start_date=start,
        catchup=spec.catchup,
        max_active_runs=1,  # one run per pipeline at a time: promotions never race within a pipeline
        tags=["retrain", spec.name, *spec.tags],
        doc_md=_doc_md(spec),
        auto_register=False,
        params=(params := trigger_params(spec)),
        default_args={"owner": spec.owner, "retries": spec.retries, "retry_delay": timedelta(minutes=1)},
    ) as dag:
        prepare = PrepareRunOperator(task_id="prepare_run", spec=spec.to_dict(), retries=0,
                                     param_schemas={k: p.schema for k, p in params.items()}, **common)
        dbt, _dbt_nodes, dbt_plan = _dbt_stage(spec, common)
        if dbt_plan.note:  # why the dbt group is missing or stale, on the DAG's own page
            dag.doc_md = f"{dag.doc_md}\n\n**dbt graph:** {dbt_plan.note}"
        gate_dbt = DbtEvidenceGateOperator(
            task_id="gate_dbt",
            project_dir=str(spec.path(spec.dbt.project_dir)),
            sources=[f"source:{uid.split('.', 2)[2]}" for uid in dbt_plan.sources],
            target=spec.dbt.target,
            warehouse_conn_id=spec.warehouse_connection_id,
            **_pool(spec),
            profiles_dir=str(spec.path(spec.dbt.profiles_dir)) if spec.dbt.profiles_dir else None,
            mlflow_conn_id=spec.registry.connection_id,
            experiment=spec.registry.experiment or f"retrain/{spec.name}",
            retries=0,
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
        gate_data = DataGateOperator(
            task_id="gate_data",
            dataset=export.output,
            config=_data_gate_config(spec).to_dict(),
            model_name=spec.registry.model_name,
            experiment=spec.registry.experiment or f"retrain/{spec.name}",
            mlflow_conn_id=spec.registry.connection_id,
            **common,
        )
        train = TrainModelOperator(
            task_id="train",
            entry_point=str(spec.path(spec.training.entry_point)),
            channels=export.output["channels"],
            hyperparameters=hyperparameters,
            backend=spec.training.backend,
            instance_type=_instance_type(spec),
            instance_count=_instance_count(spec),
            max_runtime_seconds=res.max_runtime_seconds,
            gpu=res.gpu,
            hourly_price_usd=res.hourly_price_usd,
            execution_timeout=timedelta(seconds=res.max_runtime_seconds + 600),
            backend_config=backend_config,
            max_cost_usd=spec.training.max_cost_usd,
            warehouse_conn_id=spec.warehouse_connection_id,
            hyperparameters_param="hyperparameters",
            data_fingerprint=export.output["fingerprint"], skip_unchanged=skip_unchanged(spec, FORCE_PARAM),
            **({"pool": spec.training.pool} if spec.training.pool else {}),
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
            gates=spec.model_gate_names,
            mlflow_conn_id=spec.registry.connection_id,
            **common,
        )
        gate = ModelGateOperator(
            task_id="gate_model",
            thresholds={m: t.model_dump() for m, t in spec.gates.metrics.items()},
            metrics=train.output["metrics"],
            candidate=register.output,
            dataset=export.output,
            data_gate=gate_data.output,
            champion={
                "metric": spec.champion_metric,
                "min_improvement": spec.champion_min_improvement,
                "greater_is_better": spec.champion_greater_is_better,
            },
            slices=spec.gates.slices.model_dump() if spec.gates.slices else None,
            efficiency=spec.gates.efficiency.model_dump() if spec.gates.efficiency else None,
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
            # The champion comparison is gate_model's (re-scored on the same holdout): its verdict is the
            # evidence promote decides on; the blocking gates' version tags must read "passed".
            "required_gates": [g for g in spec.model_gate_names if g != "champion"],
            "comparison": gate.output["champion"],
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
        promote = PromoteModelOperator(task_id="promote", approval=approval, dry_run_param="dry_run",
                                       reason_param="reason", **promotion)
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
            backend_config=backend_config,
            hourly_price_usd=res.hourly_price_usd,
            warehouse_conn_id=spec.warehouse_connection_id,
            weekly_budget_usd=spec.budget.weekly_usd if spec.budget else None,
            retries=2,
            **common,
        )
        report = RunReportOperator(task_id="report", stage_task_ids=STAGES[1:], retries=0,
                                   notify=spec.notify.model_dump() if spec.notify else None,
                                   mlflow_conn_id=registry.connection_id, **common)

        prepare >> dbt >> gate_dbt >> export >> gate_data >> train >> register >> gate
        before_promote >> promote >> teardown >> report
        if _dbt_nodes is not None and dbt_plan.stream:
            prepare >> _dbt_nodes  # the node tasks wait for dbt_build's per-node results, not for its end
        teardown.as_teardown(setups=prepare)
        report.as_teardown(setups=prepare)
    return dag


def _dbt_stage(spec: PipelineSpec, common: dict[str, Any]):
    """``dbt_build`` plus the ``dbt`` group of per-model nodes, rendered from the cached manifest."""
    from airflow_retrain.dbt.render import build_dbt_stage

    return build_dbt_stage(
        project_dir=str(spec.path(spec.dbt.project_dir)),
        select=list(spec.dbt.select), exclude=list(spec.dbt.exclude), selector=spec.dbt.selector,
        target=spec.dbt.target,
        warehouse_conn_id=spec.warehouse_connection_id,
        profiles_dir=str(spec.path(spec.dbt.profiles_dir)) if spec.dbt.profiles_dir else None,
        dbt_timeout=timedelta(minutes=spec.dbt.timeout_minutes), select_param=DBT_SELECT_PARAM,
        **_pool(spec), **common,
    )


def _dag_schedule(spec: PipelineSpec) -> Any:
    """A cron/preset string as is; an asset schedule as the dbt Assets (or assets-or-cron); with
    ``monitoring:``, also the pipeline's drift Asset (the scoring DAG's retrain requests)."""
    schedule = _base_schedule(spec)
    if spec.monitoring is None or not spec.monitoring.trigger_retrain:
        return schedule
    from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable

    from airflow_retrain.monitoring.drift import drift_asset_uri

    drift = Asset(drift_asset_uri(spec.name))
    if schedule is None:
        return drift
    if schedule in ("@once", "@continuous"):
        return schedule  # no time to join an Asset to: the drift Asset triggers nothing (docs/monitoring.md)
    if isinstance(schedule, str):
        cron = CronTriggerTimetable(schedule, timezone=spec.timezone)
        cron.validate()  # the DAG validates only its outer timetable: check the cron inside as the DagBag would
        return AssetOrTimeSchedule(timetable=cron, assets=drift)
    if isinstance(schedule, AssetOrTimeSchedule):
        return AssetOrTimeSchedule(timetable=schedule.timetable, assets=schedule.asset_condition | drift)
    return schedule | drift


def _base_schedule(spec: PipelineSpec) -> Any:
    if not isinstance(spec.schedule, AssetSchedule):
        return spec.schedule
    import yaml
    from airflow.sdk import Asset

    from airflow_retrain.dbt.render import asset_uri

    project = spec.path(spec.dbt.project_dir)
    project_name = (yaml.safe_load((project / "dbt_project.yml").read_text()) or {}).get("name", project.name)
    names = spec.schedule.assets or [spec.dataset.feature_table.split(".")[-1]]
    assets = [Asset(asset_uri(project_name, n)) for n in names]
    condition = assets[0]
    for a in assets[1:]:
        condition = condition | a
    if spec.schedule.cron:
        from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

        return AssetOrTimeSchedule(timetable=CronTriggerTimetable(spec.schedule.cron, timezone="UTC"), assets=condition)
    return condition


def _specs_dir() -> Path:
    """``RETRAIN_SPECS_DIR``, else ``<RETRAIN_HOME>/include/pipelines`` (see :func:`~airflow_retrain.config.retrain_home`)."""
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


GPU_TEARDOWN_DAG_ID = "gpu_teardown"


def build_gpu_teardown_dag(
    namespace: dict[str, Any] | None = None, policy_path: str | os.PathLike | None = None
) -> DAG:
    """The scheduled sweep: one task, the schedule from the teardown policy.

    A malformed policy raises :class:`~airflow_retrain.teardown.policy.PolicyError` (file and field named)
    here, at parse time. ``dags/gpu_teardown.py`` holds this DAG alone, so that import error hides no
    other DAG: unlike the retraining DAGs, no separate check file is needed.
    """
    path = Path(policy_path) if policy_path is not None else default_policy_path()
    policy = load_policy(path)
    with DAG(
        dag_id=GPU_TEARDOWN_DAG_ID,
        description="Stop idle or expired GPU resources (mark, grace, re-check, act) and ledger the cost",
        schedule=policy.schedule,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,  # with the per-resource claim: two sweeps never act on one resource
        dagrun_timeout=timedelta(minutes=30),
        tags=["retrain", "teardown", "cost"],
        doc_md=f"""### gpu_teardown
Sweeps SageMaker ({len(policy.aws)} account(s)) and this machine for billable resources that are idle or
past their TTL; marks them (`{policy.tags.planned}`), acts after a grace of {int(policy.grace_period)} s
if still idle, records every action in the cost ledger. Policy: `{policy.source_path}`
(dry run: {policy.dry_run}). `make cost-report` prints the ledger.
""",
        default_args={"owner": "ml-platform", "retries": 0},
    ) as dag:
        GpuTeardownSweepOperator(
            task_id="sweep", policy_path=str(path), execution_timeout=timedelta(minutes=14)
        )
    if namespace is not None:
        namespace[dag.dag_id] = dag
    return dag


def build_rollback_dag(spec: PipelineSpec) -> DAG:
    """``rollback_<name>``: manually restore the previous champion, or a named version that passed its gates."""
    from airflow.sdk import Param

    registry = spec.registry
    with DAG(
        dag_id=f"rollback_{spec.name}",
        description=f"Roll {registry.model_name}@champion back (manual)",
        schedule=None,
        start_date=_start_date(spec),
        catchup=False,
        max_active_runs=1,
        auto_register=False,
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
    return _dag_per_spec("rollback", build_rollback_dag, namespace, specs_dir)


def build_score_dags(namespace: dict[str, Any] | None = None, specs_dir: str | os.PathLike | None = None) -> dict[str, DAG]:
    """A ``score_<name>`` DAG per valid spec with a ``monitoring:`` block (see :mod:`airflow_retrain.monitoring.dag`);
    a spec whose DAG cannot be built is logged and skipped, never fatal."""
    from airflow_retrain.monitoring.dag import build_score_dag

    def build(spec: PipelineSpec) -> DAG | None:
        return None if spec.monitoring is None else build_score_dag(spec, _start_date(spec), _pool(spec))

    return _dag_per_spec("scoring", build, namespace, specs_dir)


def _dag_per_spec(kind: str, build: Callable[[PipelineSpec], DAG | None], namespace: dict[str, Any] | None,
                  specs_dir: str | os.PathLike | None) -> dict[str, DAG]:
    """``build(spec)`` for each valid spec (``None``: that spec has no such DAG), into ``namespace``."""
    dags: dict[str, DAG] = {}
    for spec in load_specs(specs_dir or _specs_dir()).specs:
        try:
            dag = build(spec)
        except Exception as e:  # noqa: BLE001 - one broken spec must not hide the other DAGs
            log.error("Skipping %s DAG of %s: %s", kind, spec.source_path, e)
            continue
        if dag is not None:
            dags[dag.dag_id] = dag
    if namespace is not None:
        namespace.update(dags)
    return dags
