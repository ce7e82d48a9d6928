"""The ``score_<pipeline>`` DAG's tasks: score with the champion, monitor, request a retrain.

Thin: loading and scoring live in :mod:`airflow_retrain.monitoring.scoring`, the statistics and the
decision in :mod:`airflow_retrain.monitoring.drift` and :mod:`~airflow_retrain.monitoring.labels`, the
warehouse tables in :mod:`~airflow_retrain.monitoring.store`.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_retrain.gates._mlflow import SNAPSHOT_PATH, SNAPSHOT_TAG, load_run_json
from airflow_retrain.hooks.mlflow import MlflowHook
from airflow_retrain.hooks.warehouse import WarehouseHook
from airflow_retrain.monitoring.drift import (
    DriftReport,
    Thresholds,
    decide,
    drift_asset_uri,
    feature_drift,
    prediction_psi,
    score_bins,
)
from airflow_retrain.monitoring.labels import LabelSourceError, check_labels, realised_metric
from airflow_retrain.monitoring.scoring import ScoringInputError, load_champion, score_population
from airflow_retrain.monitoring.store import MonitoringStore
from airflow_retrain.operators.base import RetrainBaseOperator

CHAMPION = "champion"


class _MonitoringOperator(RetrainBaseOperator):
    """:param mlflow_conn_id: the MLflow connection; :param warehouse_conn_id: the warehouse connection."""

    def __init__(self, *, mlflow_conn_id: str = "mlflow_default",
                 warehouse_conn_id: str | None = WarehouseHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self.warehouse_conn_id = warehouse_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(self.mlflow_conn_id)

    @cached_property
    def warehouse(self) -> WarehouseHook:
        return WarehouseHook(self.warehouse_conn_id)

    @cached_property
    def store(self) -> MonitoringStore:
        return MonitoringStore(self.warehouse)


class ScoreWithChampionOperator(_MonitoringOperator):
    """Score the scoring model's rows with ``models:/<model>@champion`` and replace this run's predictions.

    No champion yet: the task is skipped (and says so), and so is the rest of the run. A population that
    lacks a column the champion needs fails, naming the columns. The predictions of this run are written
    in one transaction (a rerun replaces them; a failure leaves the previous ones).

    :param model_name: registered model.
    :param scoring_model: the dbt model of the population; its relation comes from ``relations``.
    :param relations: model name -> relation, as returned by the dbt build.
    :param id_column: the population's id column.
    """

    template_fields = ("relations",)

    def __init__(self, *, model_name: str, scoring_model: str, relations: dict[str, str] | Any, id_column: str,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.scoring_model = scoring_model
        self.relations = relations
        self.id_column = id_column

    def execute(self, context) -> dict[str, Any]:
        version = self.hook.get_version_by_alias(self.model_name, CHAMPION)
        if version is None:
            raise AirflowSkipException(
                f"{self.model_name} has no champion yet: nothing to score (run {self.pipeline}_retrain first)"
            )
        relation = (self.relations or {}).get(self.scoring_model)
        if not relation:
            raise AirflowFailException(f"monitoring.scoring_model {self.scoring_model!r} was not built by dbt_build")
        frame = self.warehouse.read_table(relation)
        run = self.run_identity(context)
        with tempfile.TemporaryDirectory(prefix="retrain-score-") as tmp:
            champion = load_champion(self.hook, self.model_name, version, Path(tmp))
            self.log.info("Scoring %s with %s v%s: %s", relation, self.model_name, champion.version,
                          champion.runtime_note)
            start = time.perf_counter()
            try:
                scored = score_population(champion, frame, relation, self.id_column)
            except ScoringInputError as e:
                raise AirflowFailException(str(e)) from None
            seconds = time.perf_counter() - start
        if frame.empty:
            self.log.warning("%s holds no rows: nothing scored (the monitoring run records 0 rows)", relation)
        rows = self.store.replace_predictions(self.pipeline, run.run_key, scored, model_version=champion.version,
                                              model_run_id=champion.run_id, runtime=champion.runtime)
        self.log.info("Wrote %d predictions of run %s in %.2f s of scoring", rows, run.run_key, seconds)
        return {
            "model_name": self.model_name, "version": champion.version, "model_run_id": champion.run_id,
            "runtime": champion.runtime, "runtime_note": champion.runtime_note, "rows": rows,
            "relation": relation, "run_key": run.run_key, "score_seconds": round(seconds, 3),
        }


class MonitorChampionOperator(_MonitoringOperator):
    """Drift against the champion's training snapshot, prediction drift, realised performance; the decision.

    Recorded as an MLflow run in ``<experiment>/monitoring`` and a row of ``retrain_monitoring``. A crossed
    threshold requests a retrain unless the cooldown since the last request has not passed, or a run of
    the retrain DAG is already queued or running (one retrain, not two).

    :param scored: the result of :class:`ScoreWithChampionOperator`.
    :param thresholds: ``monitoring.thresholds`` as a dict.
    :param labels: ``monitoring.labels`` resolved (``relation`` or ``model``, ``id_column``, ``label_column``,
        ``event_time_column``), or ``None``.
    :param relations: model name -> relation from the dbt build (for a dbt label model).
    """

    template_fields = ("scored", "relations")

    def __init__(self, *, scored: dict[str, Any] | Any, experiment: str, thresholds: dict[str, Any],
                 labels: dict[str, Any] | None, relations: dict[str, str] | Any, primary_metric: str,
                 greater_is_better: bool, cooldown_hours: float, trigger_retrain: bool, retrain_dag_id: str,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scored = scored
        self.experiment = experiment
        self.thresholds = thresholds
        self.labels = labels
        self.relations = relations
        self.primary_metric = primary_metric
        self.greater_is_better = greater_is_better
        self.cooldown_hours = cooldown_hours
        self.trigger_retrain = trigger_retrain
        self.retrain_dag_id = retrain_dag_id

    def execute(self, context) -> dict[str, Any]:
        thresholds = Thresholds.from_dict(self.thresholds)
        scored = self.scored
        model_name, version = scored["model_name"], scored["version"]
        mv = self.hook.get_version(model_name, version)
        population = self.warehouse.read_table(scored["relation"])
        snapshot = self._snapshot(mv)
        if snapshot is None:
            report = DriftReport(notes=[f"{model_name} v{version} carries no training snapshot: feature drift not measured"])
        else:
            report = feature_drift(snapshot, population, thresholds)
        predictions = self.store.predictions(self.pipeline, scored["run_key"])
        report.score_bins = score_bins(predictions["score"]) if not predictions.empty else []
        report.prediction_psi = prediction_psi(self.store.baseline_scores(self.pipeline, version), report.score_bins)
        champion_metrics = self.hook.run_metrics(mv.run_id)
        realised = self._realised(version, champion_metrics.get(self.primary_metric))
        decision = decide(report, scored["rows"], thresholds, realised)
        requested, why = self._request(context, decision) if decision.crossed else (False, decision.reason)
        if scored["rows"] < thresholds.min_rows:
            why = f"{scored['rows']} scored rows, fewer than monitoring.thresholds.min_rows={thresholds.min_rows}: nothing decided"
        outcome = {
            "pipeline": self.pipeline, "run_key": scored["run_key"], "dag_run_id": context["run_id"],
            "model_name": model_name, "model_version": str(version), "rows_scored": scored["rows"],
            "drifted_features": len(report.drifted), "drifted_share": report.drifted_share,
            "prediction_psi": report.prediction_psi,
            "realised_metric": self.primary_metric if realised else None,
            "realised_value": (realised or {}).get("value"), "champion_value": champion_metrics.get(self.primary_metric),
            "crossed": decision.crossed, "retrain_requested": requested, "reason": decision.reason if requested else why,
            "details": {**report.to_dict(), "realised": realised, "runtime": scored.get("runtime"),
                        "runtime_note": scored.get("runtime_note"), "reasons": decision.reasons},
        }
        outcome["mlflow_run_id"] = self._log_run(outcome, report, realised)
        self.store.record({k: v for k, v in outcome.items() if k != "mlflow_run_id"})
        for note in report.notes:
            self.log.info("Drift note: %s", note)
        self.log.info("Monitoring of %s v%s: %s", model_name, version, outcome["reason"])
        return {
            "retrain": requested, "reason": outcome["reason"], "crossed": decision.crossed,
            "reasons": decision.reasons, "model_version": str(version), "drifted": report.drifted,
            "prediction_psi": report.prediction_psi, "realised": realised, "mlflow_run_id": outcome["mlflow_run_id"],
        }

    def _snapshot(self, mv) -> dict[str, Any] | None:
        uri = (mv.tags or {}).get(SNAPSHOT_TAG) or f"runs:/{mv.run_id}/{SNAPSHOT_PATH}"
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        return load_run_json(self.hook, run_id, path) if uri.startswith("runs:/") and path else None

    def _realised(self, version: str, champion_value: float | None) -> dict[str, Any] | None:
        if not self.labels:
            return None
        labels = self.labels
        relation = labels.get("relation") or (self.relations or {}).get(labels.get("model") or "")
        if not relation or not self.store.relation_exists(relation):
            return {"metric": self.primary_metric, "value": None, "rows": 0, "unknown_ids": 0,
                    "champion_value": champion_value, "drop": None, "note": f"no outcomes yet ({relation} does not exist)"}
        frame = self.warehouse.read_table(relation)
        try:
            check_labels(frame, relation, labels["id_column"], labels["label_column"], labels["event_time_column"])
        except LabelSourceError as e:
            raise AirflowFailException(f"monitoring.labels: {e}") from None
        result = realised_metric(
            frame, self.store.latest_predictions(self.pipeline, version), id_column=labels["id_column"],
            label_column=labels["label_column"], time_column=labels["event_time_column"], metric=self.primary_metric,
            champion_value=champion_value, greater_is_better=self.greater_is_better,
            min_rows=Thresholds.from_dict(self.thresholds).min_labelled_rows,
        )
        if result["unknown_ids"]:
            self.log.warning("%s: %d outcome(s) for ids never scored by v%s; left out", relation,
                             result["unknown_ids"], version)
        return result

    def _request(self, context, decision) -> tuple[bool, str]:
        """Whether to request a retrain for a crossed threshold: not off, not inside the cooldown, none running."""
        if not self.trigger_retrain:
            return False, f"{decision.reason} (monitoring.trigger_retrain is false: recorded only)"
        last = self.store.last_request(self.pipeline)
        if last is not None:
            at = last["measured_at"]
            at = at.to_pydatetime() if hasattr(at, "to_pydatetime") else at
            until = at.replace(tzinfo=at.tzinfo or UTC) + timedelta(hours=self.cooldown_hours)
            if datetime.now(UTC) < until:
                return False, (f"{decision.reason}; retrain not requested: inside the cooldown until "
                               f"{until.isoformat(timespec='seconds')} (requested by {last['dag_run_id']})")
        active = self._active_retrains(context)
        if active:
            return False, f"{decision.reason}; retrain not requested: {self.retrain_dag_id} already has {active} run(s) queued or running"
        return True, decision.reason

    def _active_retrains(self, context) -> int:
        """Runs of the retrain DAG queued or running, through the Task SDK (no metadata DB access)."""
        ti = context["ti"]
        try:
            return int(ti.get_dr_count(dag_id=self.retrain_dag_id, states=["queued", "running"]))
        except Exception as e:  # noqa: BLE001 - an API answer we cannot read must not hide the drift itself
            self.log.warning("Could not count runs of %s (%s); assuming none", self.retrain_dag_id, e)
            return 0

    def _log_run(self, outcome: dict[str, Any], report: DriftReport, realised: dict[str, Any] | None) -> str:
        from mlflow.entities import Metric

        exp_id = self.hook.ensure_experiment(f"{self.experiment}/monitoring")
        tags = {"retrain.pipeline": self.pipeline, "retrain.kind": "monitoring", "retrain.run_key": outcome["run_key"],
                "retrain.model_version": outcome["model_version"], "retrain.retrain_requested": str(outcome["retrain_requested"]).lower(),
                "retrain.reason": outcome["reason"][:5000]}
        run = self.hook.call("create monitoring run", self.hook.client.create_run, exp_id,
                             run_name=f"{outcome['dag_run_id']}/monitoring", tags=tags)
        now = int(time.time() * 1000)
        values = {"rows_scored": outcome["rows_scored"], "drifted_features": outcome["drifted_features"],
                  "drifted_share": report.drifted_share, "prediction_psi": report.prediction_psi,
                  **{f"psi.{c}": e["psi"] for c, e in report.features.items()},
                  **{f"ks.{c}": e["ks"] for c, e in report.features.items()}}
        if realised and realised.get("value") is not None:
            values[f"realised.{realised['metric']}"] = realised["value"]
        metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if v is not None]
        run_id = run.info.run_id
        for i in range(0, len(metrics), 1000):
            self.hook.call("log monitoring metrics", self.hook.client.log_batch, run_id, metrics=metrics[i:i + 1000])
        self.hook.log_dict(run_id, {k: v for k, v in outcome.items() if k != "mlflow_run_id"}, "monitoring.json")
        self.hook.call("finish monitoring run", self.hook.client.set_terminated, run_id, "FINISHED")
        return run_id


class RequestRetrainOperator(BaseOperator):
    """Update the pipeline's drift Asset (which schedules the retrain DAG) when the monitor requested it.

    The event's ``extra`` carries the reason, the scoring run and the champion version; the retrain run
    reads it from its triggering events. Skipped (no event) when no retrain was requested.

    :param decision: the result of :class:`MonitorChampionOperator`.
    :param pipeline: the pipeline (its drift Asset).
    """

    template_fields = ("decision",)

    def __init__(self, *, decision: dict[str, Any] | Any, pipeline: str, **kwargs: Any) -> None:
        kwargs.setdefault("outlets", [Asset(drift_asset_uri(pipeline))])
        super().__init__(**kwargs)
        self.decision = decision
        self.pipeline = pipeline

    def execute(self, context) -> dict[str, Any]:
        decision = self.decision or {}
        if not decision.get("retrain"):
            raise AirflowSkipException(f"no retrain requested: {decision.get('reason', 'no decision')}")
        extra = {"reason": decision["reason"], "scoring_run_id": context["run_id"],
                 "champion_version": decision.get("model_version"), "monitoring_run_id": decision.get("mlflow_run_id")}
        context["outlet_events"][Asset(drift_asset_uri(self.pipeline))].extra = extra
        self.log.info("Requested a retrain of %s: %s", self.pipeline, decision["reason"])
        return extra
