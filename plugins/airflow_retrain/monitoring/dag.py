"""``score_<pipeline>``: dbt build of the scoring model > score with the champion > monitor > request a retrain.

Built per spec with a ``monitoring:`` block (see :func:`airflow_retrain.dag_factory.build_score_dags`).
The retrain DAG of the same spec is scheduled on its cron *or* the drift Asset that ``request_retrain``
updates (:func:`airflow_retrain.dag_factory._dag_schedule`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG

from airflow_retrain.monitoring.drift import drift_asset_uri
from airflow_retrain.operators.dbt import DbtBuildOperator
from airflow_retrain.operators.monitoring import (
    MonitorChampionOperator,
    RequestRetrainOperator,
    ScoreWithChampionOperator,
)

if TYPE_CHECKING:
    from datetime import datetime

    from airflow_retrain.spec.models import PipelineSpec


def label_settings(spec: PipelineSpec) -> dict[str, Any] | None:
    """``monitoring.labels`` with the dataset's defaults filled in (what the monitor carries)."""
    labels = spec.monitoring.labels if spec.monitoring else None
    if labels is None:
        return None
    return {
        "model": labels.model,
        "relation": labels.table,
        "id_column": labels.id_column or spec.dataset.id_column,
        "label_column": labels.label_column or spec.dataset.target_column,
        "event_time_column": labels.event_time_column,
    }


def build_score_dag(spec: PipelineSpec, start_date: datetime, pool: dict[str, Any]) -> DAG:
    """The scoring and monitoring DAG of one spec with a ``monitoring:`` block."""
    monitoring = spec.monitoring
    assert monitoring is not None
    registry = spec.registry
    common: dict[str, Any] = {"pipeline": spec.name}
    if spec.artifacts.root:
        common.update(artifact_root=spec.artifacts.root, artifact_conn_id=spec.artifacts.connection_id)
    # With its upstream models: the population is scored as the sources hold it now, not as the last
    # retrain left the feature mart.
    select = [f"+{monitoring.scoring_model}"]
    if monitoring.labels is not None and monitoring.labels.model:
        select.append(f"+{monitoring.labels.model}")
    t = monitoring.thresholds
    with DAG(
        dag_id=spec.score_dag_id,
        description=f"Score {monitoring.scoring_model} with {registry.model_name}@champion and watch drift",
        schedule=monitoring.schedule,
        start_date=start_date,
        catchup=False,
        max_active_runs=1,  # the cooldown reads the previous run's decision
        auto_register=False,
        tags=["retrain", "monitoring", spec.name],
        default_args={"owner": spec.owner, "retries": spec.retries, "retry_delay": timedelta(minutes=1)},
        doc_md=f"""### score_{spec.name}: score with the champion, watch drift
1. `dbt_build`: `dbt build --select {' '.join(select)}`
2. `score`: `models:/{registry.model_name}@champion` scores `{monitoring.scoring_model}`; predictions
   replace this run's rows of `retrain_predictions` in one transaction (skipped while there is no champion)
3. `monitor`: PSI{'/KS' if t.ks_max else ''} per feature against the champion's training snapshot (max
   {t.psi_max}, share of drifted features > {t.drifted_share:.0%}), prediction PSI (max {t.prediction_psi_max}),
   realised `{registry.primary_metric}` once outcomes arrive (max drop {t.metric_drop_max}); an MLflow run in
   `<experiment>/monitoring` and a row of `retrain_monitoring`
4. `request_retrain`: updates `{drift_asset_uri(spec.name)}` (scheduling `{spec.dag_id}`) with the reason,
   unless the cooldown ({monitoring.cooldown_hours} h) has not passed or a retrain is already running
""",
    ) as dag:
        dbt = DbtBuildOperator(
            task_id="dbt_build",
            project_dir=str(spec.path(spec.dbt.project_dir)),
            select=select,
            target=spec.dbt.target,
            warehouse_conn_id=spec.warehouse_connection_id,
            profiles_dir=str(spec.path(spec.dbt.profiles_dir)) if spec.dbt.profiles_dir else None,
            dbt_timeout=spec.dbt.timeout_minutes * 60,
            execution_timeout=timedelta(minutes=spec.dbt.timeout_minutes + 5),
            **pool,
            **common,
        )
        connections = {"mlflow_conn_id": registry.connection_id, "warehouse_conn_id": spec.warehouse_connection_id}
        score = ScoreWithChampionOperator(
            task_id="score",
            model_name=registry.model_name,
            scoring_model=monitoring.scoring_model,
            relations=dbt.output["relations"],
            id_column=spec.dataset.id_column,
            **pool,
            **connections,
            **common,
        )
        monitor = MonitorChampionOperator(
            task_id="monitor",
            scored=score.output,
            experiment=registry.experiment or f"retrain/{spec.name}",
            thresholds=t.model_dump(),
            labels=label_settings(spec),
            relations=dbt.output["relations"],
            primary_metric=registry.primary_metric,
            greater_is_better=registry.greater_is_better,
            cooldown_hours=monitoring.cooldown_hours,
            trigger_retrain=monitoring.trigger_retrain,
            retrain_dag_id=spec.dag_id,
            retries=0,  # its decision is recorded once; a rerun of the DAG run records it again
            **pool,
            **connections,
            **common,
        )
        request = RequestRetrainOperator(task_id="request_retrain", decision=monitor.output, pipeline=spec.name,
                                         retries=0)
        dbt >> score >> monitor >> request
    return dag
