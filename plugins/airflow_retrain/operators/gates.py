"""Gate operators: data gates before training, model gates after registration; evidence in MLflow.

- :class:`DataGateOperator` (task ``gate_data``): schema, volume, nulls, label balance and drift of the
  exported dataset; a failure stops the run before training (no retry).
- :class:`ModelGateOperator` (task ``gate_model``): metric thresholds, the champion re-scored on the same
  holdout, per-slice regressions and the efficiency budget, recorded on the candidate's version.
- :class:`MetricGateOperator`: the metric thresholds alone (kept for DAGs built before the model gates).

Every verdict, pass or fail, goes to MLflow (``gate.<gate>.*`` metrics and ``gates/<gate>.json``) and to
the task log as one table (gate | check | observed | threshold | result). The operators only wire
things together; the checks live in :mod:`airflow_retrain.gates`.
"""

from __future__ import annotations

import json
import tempfile
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_retrain.gates.base import Check, Verdict, combine, evidence_table
from airflow_retrain.gates.metrics import MetricThresholdGate
from airflow_retrain.operators.base import MlflowBaseOperator
from airflow_retrain.operators.registry import GATE_TAG

if TYPE_CHECKING:
    from airflow_retrain.gates.data import DataGateConfig


class MetricGateOperator(MlflowBaseOperator):
    """Fail (without retry) unless every metric is present, finite and within its bounds.

    The verdict is written to the candidate's model version (``retrain.gate.metrics`` = passed/failed,
    plus the message) and to its run (``gates/metrics.json``), so the registry shows why a version was or
    was not eligible for promotion.

    :param thresholds: metric -> ``{"min": .., "max": ..}``.
    :param metrics: the candidate's metrics (``TrainModelOperator`` result ``["metrics"]``).
    :param candidate: the result of :class:`RegisterModelOperator`; ``None`` to gate without recording.
    :return: the verdict as a dict.
    """

    template_fields = ("thresholds", "metrics", "candidate")
    ui_color = "#c6e2ff"

    def __init__(
        self,
        *,
        thresholds: dict[str, dict[str, float | None]],
        metrics: dict[str, Any] | Any,
        candidate: dict[str, Any] | Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.thresholds = thresholds
        self.metrics = metrics
        self.candidate = candidate

    def execute(self, context) -> dict[str, Any]:
        gate = MetricThresholdGate(self.thresholds)
        verdict = gate.evaluate(self.metrics or {})
        for check in verdict.checks:
            self.log.info("%s %s", "PASS" if check.passed else "FAIL", check.reason)
        if self.candidate:
            name, version = self.candidate["model_name"], self.candidate["version"]
            self.hook.set_version_tags(
                name,
                version,
                {
                    f"{GATE_TAG}.{gate.name}": "passed" if verdict.passed else "failed",
                    f"{GATE_TAG}.{gate.name}.message": verdict.message[:4000],
                },
            )
            self.hook.log_dict(self.candidate["run_id"], verdict.to_dict(), f"gates/{gate.name}.json")
        if not verdict.passed:
            where = f" ({self.candidate['model_name']} v{self.candidate['version']})" if self.candidate else ""
            raise AirflowFailException(verdict.message + where)
        return verdict.to_dict()


def _failure_summary(verdicts: list[Verdict]) -> str:
    """``gate: check observed vs threshold`` for every failed check, for the one-line task failure."""
    parts = []
    for verdict in verdicts:
        if verdict.passed:
            continue
        reasons = [c.reason for c in verdict.failed_checks] or [verdict.message]
        parts.append(f"{verdict.gate} gate failed: " + "; ".join(reasons[:10]))
    return " | ".join(parts)


def _with_contract(config: DataGateConfig) -> DataGateConfig:
    """Read the feature model's dbt contract now, from the manifest ``dbt_build`` just refreshed: a contract
    only when its config has ``contract.enforced: true``; otherwise the note says why the check is skipped."""
    from dataclasses import replace

    from airflow_retrain.dbt.contracts import project_contract

    if not config.match_contract or config.contract is not None or not config.dbt_project_dir:
        return config
    contract = project_contract(config.dbt_project_dir, config.feature_model or "")
    return replace(config, contract=contract.columns, contract_note=contract.note)


class DataGateOperator(MlflowBaseOperator):
    """Check the exported dataset before training; a failure stops the run (no retry, no training paid).

    The evidence goes to this DAG run's *data run* in MLflow (experiment ``<experiment>/data``):
    ``gates/data.json``, the ``gate.data.*`` metrics (``gate.data.psi.<column>``, ...) and the train
    split's snapshot ``snapshot/training_stats.json``, which the model gate later copies onto the
    candidate's run. The previous run's schema and row count come from the last data run whose gate
    passed; drift is measured against the snapshot of the version ``champion`` points at.

    :param dataset: the result of :class:`ExportTrainingDatasetOperator` (channels, label and id columns).
    :param config: a :class:`~airflow_retrain.gates.data.DataGateConfig` as its ``to_dict()`` (the spec's
        ``gates.data``, resolved by ``DataGateConfig.from_spec``; the dbt contract is read at run time); a key that is not
        one of its fields fails the task.
    :param model_name: registered model whose champion's snapshot is the drift reference.
    :param experiment: the pipeline's MLflow experiment (data runs go to ``<experiment>/data``).
    :param alias: the alias whose snapshot is the reference.
    :return: ``passed``, the verdict, the data run id and the snapshot's ``runs:/`` URI.
    """

    template_fields = ("dataset", "config", "model_name")
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        dataset: dict[str, Any] | Any,
        config: dict[str, Any],
        model_name: str,
        experiment: str,
        alias: str = "champion",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.config = config
        self.model_name = model_name
        self.experiment = experiment
        self.alias = alias

    def execute(self, context) -> dict[str, Any]:
        import pandas as pd

        from airflow_retrain.gates import _mlflow as store
        from airflow_retrain.gates.data import (
            DataEvidence,
            DataGate,
            DataGateConfig,
            profile_table,
            read_split,
        )
        from airflow_retrain.monitoring.drift import drift_trigger

        config = _with_contract(DataGateConfig.from_dict(self.config))
        run = self.run_identity(context)
        target, id_column = self.dataset["target_column"], self.dataset["id_column"]
        channels = self.dataset["channels"]
        train = read_split(channels["train"])
        test = read_split(channels["test"])
        train_frame = train.to_pandas()
        frame = pd.concat([train_frame, test.to_pandas()], ignore_index=True)
        profile = profile_table(train, target_column=target, id_column=id_column)
        profile["rows_total"] = len(frame)
        previous, previous_run = store.previous_data_profile(self.hook, self.experiment, self.pipeline, run.run_key)
        snapshot, snapshot_source = (None, None)
        wants_snapshot = config.match_champion or config.max_null_rate_increase is not None
        if wants_snapshot or config.psi_max is not None or config.ks_max is not None:
            snapshot, snapshot_source = store.champion_snapshot(self.hook, self.model_name, self.alias)
            self.log.info("Champion's training snapshot (schema, null rates, drift): %s", snapshot_source)
        evidence = DataEvidence(
            frame=frame,
            train=train_frame,
            profile=profile,
            target_column=target,
            id_column=id_column,
            previous=previous,
            previous_rows=(previous or {}).get("rows_total"),
            snapshot=snapshot,
            snapshot_source=snapshot_source,
            drift_trigger=(trigger := drift_trigger(context, self.pipeline)) and trigger["reason"],
        )
        if trigger:
            self.log.info("Requested by the drift monitor (%s): drift over the bound is %s", trigger["reason"],
                          "recorded, not failed" if config.on_drift_trigger == "warn" else "failed as in any run")
        verdict = DataGate(config).evaluate(evidence)
        verdict.details["previous_data_run"] = previous_run
        data_run = store.open_data_run(self.hook, self.experiment, self.pipeline, run.dag_id, run.run_key)
        self.hook.log_dict(data_run, profile, store.SNAPSHOT_PATH)
        store.log_verdict(self.hook, data_run, verdict)
        store.close_data_run(self.hook, data_run, verdict)
        self.log.info("Data gate evidence (MLflow data run %s):\n%s", data_run, evidence_table([verdict]))
        result = {
            "passed": verdict.passed,
            "verdict": verdict.to_dict(),
            "data_run_id": data_run,
            "snapshot_uri": f"runs:/{data_run}/{store.SNAPSHOT_PATH}",
        }
        context["ti"].xcom_push(key="verdicts", value=[verdict.to_dict()])
        if not verdict.passed:
            raise AirflowFailException(
                f"{_failure_summary([verdict])} (pipeline {self.pipeline}; nothing was trained; evidence in "
                f"MLflow run {data_run})"
            )
        return result


class ModelGateOperator(MlflowBaseOperator):
    """Gate a registered candidate: thresholds, champion re-scored on the same holdout, slices, efficiency.

    Every verdict is recorded on the candidate: version tags ``retrain.gate.<gate>`` = ``passed``/``failed``
    (plus ``.message``), and on its run ``gates/<gate>.json`` and ``gate.<gate>.*`` metrics; the data
    gate's verdict and the training snapshot are copied onto the run here (they were decided before the
    run existed), and the version is tagged ``retrain.snapshot`` (where the snapshot is) and
    ``retrain.gate.champion.*`` (the comparison).

    ``metrics``, ``slices``, ``efficiency`` (and ``data``) are blocking: a failure fails the task, naming
    the gate, the number and the threshold. The ``champion`` comparison is the promotion decision: a
    candidate that does not beat the champion is recorded (``retrain.gate.champion`` = ``failed``,
    decision ``does_not_beat``) and the task succeeds, so the run ends with the champion kept; only a
    champion that cannot be loaded or scored fails the task (``decision`` = ``error``, fail closed).

    :param thresholds: metric -> ``{"min": .., "max": ..}`` on the training-reported metrics.
    :param metrics: the candidate's reported metrics (``TrainModelOperator`` result ``["metrics"]``).
    :param candidate: the result of :class:`RegisterModelOperator`.
    :param dataset: the result of :class:`ExportTrainingDatasetOperator` (the holdout channel).
    :param data_gate: the result of :class:`DataGateOperator`, or ``None``.
    :param champion: ``{"metric", "min_improvement", "greater_is_better"}``.
    :param slices: ``{"columns", "metric", "max_regression", "min_rows"}`` or ``None``.
    :param efficiency: ``{"max_model_mb", "max_latency_ms", "rows"}`` or ``None``.
    :param alias: the alias of the model the candidate is compared with.
    :return: the decision data promotion reads: ``passed`` (blocking gates), ``promotable`` (and it beats
        the champion), ``gates`` (name -> passed), ``champion`` (the re-scored comparison), ``verdicts``.
    """

    template_fields = ("thresholds", "metrics", "candidate", "dataset", "data_gate")
    ui_color = "#c6e2ff"

    def __init__(
        self,
        *,
        thresholds: dict[str, dict[str, float | None]],
        metrics: dict[str, Any] | Any,
        candidate: dict[str, Any] | Any,
        dataset: dict[str, Any] | Any,
        champion: dict[str, Any],
        data_gate: dict[str, Any] | Any = None,
        slices: dict[str, Any] | None = None,
        efficiency: dict[str, Any] | None = None,
        alias: str = "champion",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.thresholds = thresholds
        self.metrics = metrics
        self.candidate = candidate
        self.dataset = dataset
        self.champion = champion
        self.data_gate = data_gate
        self.slices = slices
        self.efficiency = efficiency
        self.alias = alias

    def execute(self, context) -> dict[str, Any]:
        from airflow_retrain.gates.data import read_split
        from airflow_retrain.gates.model import ChampionGate, SliceGate, holdout_arrays

        name, version, run_id = self.candidate["model_name"], str(self.candidate["version"]), self.candidate["run_id"]
        verdicts: list[Verdict] = []
        data_verdict = self._record_data_gate(name, version, run_id)
        if data_verdict is not None:
            verdicts.append(data_verdict)
        verdicts.append(MetricThresholdGate(self.thresholds).evaluate(self.metrics or {}))

        holdout = read_split(self.dataset["channels"]["test"]).to_pandas()
        features, labels = holdout_arrays(holdout, self.dataset["target_column"], self.dataset["id_column"])
        champion_gate = ChampionGate(
            self.champion["metric"], self.champion.get("min_improvement") or 0.0, self.champion.get("greater_is_better")
        )
        with tempfile.TemporaryDirectory(prefix="retrain-gate-model-") as tmp:
            scored, candidate_model, candidate_error = self._score(name, version, features, labels, holdout, tmp)
            if candidate_error:
                fail = Check("candidate", None, None, None, False, f"candidate {name} v{version}: {candidate_error}")
                verdicts.append(combine("champion", [fail], {"decision": "error"}, what="champion gate"))
                if self.slices:
                    verdicts.append(combine("slices", [fail], what="slice gate"))
                if self.efficiency:
                    verdicts.append(combine("efficiency", [fail], what="efficiency gate"))
            else:
                verdicts.append(champion_gate.evaluate(scored))
                if self.slices:
                    gate = SliceGate(
                        self.slices["columns"],
                        self.slices.get("metric") or self.champion["metric"],
                        self.slices.get("max_regression", 0.02),
                        self.slices.get("min_rows", 30),
                        self.champion.get("greater_is_better")
                        if (self.slices.get("metric") or self.champion["metric"]) == self.champion["metric"]
                        else None,
                    )
                    verdicts.append(gate.evaluate(scored))
                if self.efficiency:
                    verdicts.append(self._efficiency(candidate_model, features))

        self._record(name, version, run_id, verdicts)
        by_gate = {v.gate: v for v in verdicts}
        champion_verdict = by_gate.get("champion")
        champion_details = dict(champion_verdict.details) if champion_verdict else {}
        # Not beating the champion decides promotion, it does not fail the gate: the table says so.
        advisory = ["champion"] if champion_details.get("decision") != "error" else []
        self.log.info("Gate evidence for %s v%s (MLflow run %s):\n%s", name, version, run_id,
                      evidence_table(verdicts, advisory=advisory))
        blocking = [v for v in verdicts if v.gate != "champion" or champion_details.get("decision") == "error"]
        passed = all(v.passed for v in blocking)
        result = {
            "model_name": name,
            "version": version,
            "passed": passed,
            "promotable": passed and bool(champion_verdict and champion_verdict.passed),
            "gates": {v.gate: v.passed for v in verdicts},
            "champion": champion_details,
            "verdicts": {v.gate: v.to_dict() for v in verdicts},
        }
        context["ti"].xcom_push(key="verdicts", value=[v.to_dict() for v in verdicts])
        if not passed:
            raise AirflowFailException(f"{name} v{version}: {_failure_summary(blocking)}")
        if champion_verdict is not None:
            self.log.info("Champion comparison: %s", champion_verdict.message)
        self.log.info("Decision data: %s", json.dumps({k: result[k] for k in ("passed", "promotable", "gates", "champion")}))
        # Under its own key too: promote reads it as ``gate_model.output["champion"]`` (an XCom key).
        context["ti"].xcom_push(key="champion", value=result["champion"])
        return result

    # -- pieces -----------------------------------------------------------------------------------
    def _record_data_gate(self, name: str, version: str, run_id: str) -> Verdict | None:
        """Copy the data gate's verdict and the training snapshot onto the candidate's run and version."""
        from airflow_retrain.gates import _mlflow as store

        if not self.data_gate:
            return None
        verdict = Verdict.from_dict(self.data_gate["verdict"])
        tags = {}
        data_run = self.data_gate.get("data_run_id")
        if data_run:
            snapshot = store.load_run_json(self.hook, data_run, store.SNAPSHOT_PATH)
            if snapshot is not None:
                self.hook.log_dict(run_id, snapshot, store.SNAPSHOT_PATH)
                tags[store.SNAPSHOT_TAG] = f"runs:/{run_id}/{store.SNAPSHOT_PATH}"
            else:
                self.log.warning("Data run %s has no %s; the version carries no snapshot", data_run, store.SNAPSHOT_PATH)
            tags[store.DATA_RUN_TAG] = data_run
            self.hook.set_run_tags(run_id, {store.DATA_RUN_TAG: data_run})
        if tags:
            self.hook.set_version_tags(name, version, tags)
        return verdict

    def _score(self, name, version, features, labels, holdout, tmp):
        """Load the candidate and the champion as served and score the same holdout with both."""
        from pathlib import Path

        from airflow_retrain.gates import _mlflow as store
        from airflow_retrain.gates.model import ScoredHoldout

        try:
            candidate_model = store.LoadedModel(store.download_version(self.hook, name, version, Path(tmp) / "candidate"))
            candidate_scores = candidate_model.predict_proba(features)
        except Exception as e:  # noqa: BLE001 - any failure to load or score the candidate fails its gates
            return None, None, f"cannot be loaded or scored: {type(e).__name__}: {e}"
        scored = ScoredHoldout(labels=labels, candidate=candidate_scores, frame=holdout, candidate_version=version)
        champion = self.hook.get_version_by_alias(name, self.alias)
        if champion is None:
            self.log.info("%s has no %s yet", name, self.alias)
            return scored, candidate_model, None
        scored.champion_version = str(champion.version)
        if scored.champion_version == version:
            scored.champion = candidate_scores
            return scored, candidate_model, None
        try:
            scored.champion_stored_value = self.hook.run_metrics(champion.run_id).get(self.champion["metric"])
        except Exception:  # noqa: BLE001 - the stored value is shown for reference only
            scored.champion_stored_value = None
        try:
            model = store.LoadedModel(store.download_version(self.hook, name, champion.version, Path(tmp) / "champion"))
            scored.champion = model.predict_proba(features)
        except Exception as e:  # noqa: BLE001 - fail closed with the reason
            scored.champion_error = f"cannot be loaded or scored: {type(e).__name__}: {e}"
            self.log.error("Champion %s v%s %s", name, champion.version, scored.champion_error)
        return scored, candidate_model, None

    def _efficiency(self, model, features) -> Verdict:
        from airflow_retrain.gates.model import EfficiencyEvidence, EfficiencyGate

        rows = int(self.efficiency.get("rows", 1000))
        latency, error = None, None
        try:
            latency = model.batch_latency_ms(features, rows)
        except Exception as e:  # noqa: BLE001 - recorded as the reason the check failed
            error = f"{type(e).__name__}: {e}"
        evidence = EfficiencyEvidence(model_bytes=model.size_bytes, latency_ms=latency, rows=rows, error=error)
        return EfficiencyGate(self.efficiency.get("max_model_mb"), self.efficiency.get("max_latency_ms")).evaluate(evidence)

    def _record(self, name: str, version: str, run_id: str, verdicts: list[Verdict]) -> None:
        from airflow_retrain.gates import _mlflow as store

        tags: dict[str, str] = {}
        for verdict in verdicts:
            store.log_verdict(self.hook, run_id, verdict)
            tags[f"{GATE_TAG}.{verdict.gate}"] = "passed" if verdict.passed else "failed"
            tags[f"{GATE_TAG}.{verdict.gate}.message"] = verdict.message[:4000]
            if verdict.gate == "champion":
                for key in ("decision", "metric", "candidate_value", "champion_version", "champion_value", "delta",
                            "min_improvement", "holdout_rows"):
                    value = verdict.details.get(key)
                    tags[f"{GATE_TAG}.champion.{key}"] = "none" if value is None else str(value)
        self.hook.set_version_tags(name, version, tags)
