"""Register every candidate in MLflow; move ``champion`` only to a gated version that beats it."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_retrain import artifacts
from airflow_retrain.hooks.mlflow import MlflowHook
from airflow_retrain.links.mlflow import MlflowCandidateVersionLink, MlflowChampionVersionLink, MlflowRunLink
from airflow_retrain.operators.base import RetrainBaseOperator

TAG = "retrain"
GATE_TAG = f"{TAG}.gate"


class RegisterModelOperator(RetrainBaseOperator):
    """Log a trained candidate to MLflow (params, metrics, model with signature) and register a version.

    Every candidate is registered, whatever the gates later decide; its gate tags start as ``pending``.
    A retry of the same DAG run reuses the version it already registered from the same training job.
    The model, its ``metrics.json`` and a holdout sample (for the signature) are downloaded from the
    artifact store into a temporary folder; if they are gone (the run's teardown removed them), the task
    fails without retry, naming the missing URI -- clear the ``train`` task too, and the run trains again.

    :param model_name: registered model name.
    :param training: the result of :class:`TrainModelOperator` (``model_uri``, ``output_uri``).
    :param dataset: the result of :class:`ExportTrainingDatasetOperator` (its ``test`` channel URI gives the
        signature sample).
    :param experiment: MLflow experiment name.
    :param flavor: MLflow flavor of the model files (``xgboost``).
    :param params: extra params to log (hyperparameters, spec fields).
    :param gates: names of the gates that will decide; each gets a ``pending`` tag.
    """

    template_fields = ("model_name", "training", "dataset", "params_to_log")
    operator_extra_links = (MlflowRunLink(), MlflowCandidateVersionLink())

    def __init__(
        self,
        *,
        model_name: str,
        training: dict[str, Any] | Any,
        dataset: dict[str, Any] | Any,
        experiment: str,
        flavor: str = "xgboost",
        params_to_log: dict[str, Any] | None = None,
        gates: list[str] | None = None,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.training = training
        self.dataset = dataset
        self.experiment = experiment
        self.flavor = flavor
        self.params_to_log = params_to_log
        self.gates = gates or ["metrics"]
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(self.mlflow_conn_id)

    def execute(self, context) -> dict[str, Any]:
        run = self.run_identity(context)
        existing = self._existing_version(run.run_key)
        if existing is not None:
            self.log.info("Run %s already registered %s v%s; reusing it", run.run_key, self.model_name, existing["version"])
            return existing
        local = Path(tempfile.mkdtemp(prefix="retrain-register-"))
        try:
            return self._register(context, run, local)
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def _download(self, uri: str, local: Path, what: str) -> Path:
        try:
            return artifacts.download(self.artifact_store.path(uri), local)
        except artifacts.ArtifactNotFound:
            raise AirflowFailException(
                f"cannot register {self.model_name}: {what} {uri} no longer exists in the artifact store (the "
                f"run's teardown removes its scratch); clear the train task as well so that the run trains again"
            ) from None

    def _register(self, context, run, local: Path) -> dict[str, Any]:
        import pandas as pd

        model_dir = self._download(self.training["model_uri"], local / "model", "the trained model")
        output_dir = self._download(self.training["output_uri"], local / "output", "the training output")
        test_dir = self._download(self.dataset["channels"]["test"], local / "test", "the holdout channel")
        parquet = sorted(test_dir.rglob("*.parquet"))
        if not parquet:
            raise AirflowFailException(f"the holdout channel {self.dataset['channels']['test']} holds no Parquet file")
        sample = pd.read_parquet(parquet[0]).head(50)
        sample = sample.drop(columns=[self.dataset["id_column"], self.dataset["target_column"]])
        info = self.training.get("info", {})
        params = {
            **{f"hp.{k}": v for k, v in (self.params_to_log or {}).get("hyperparameters", {}).items()},
            **{k: v for k, v in (self.params_to_log or {}).items() if k != "hyperparameters"},
            "dataset.relation": self.dataset["relation"],
            "dataset.fingerprint": self.dataset["fingerprint"],
            "dataset.rows_train": self.dataset["rows"]["train"],
            "dataset.rows_test": self.dataset["rows"]["test"],
            "training.job_name": self.training["job_name"],
            "training.backend": self.training["backend"],
            "training.device": info.get("device", "unknown"),
        }
        metrics = {k: v for k, v in self.training["metrics"].items() if v is not None}
        metrics["training_compute_seconds"] = float(self.training["compute_seconds"])
        metrics["training_cost_usd"] = float(self.training["cost"]["usd"])
        identity = {
            f"{TAG}.pipeline": self.pipeline,
            f"{TAG}.dag_id": run.dag_id,
            f"{TAG}.run_id": run.run_id,
            f"{TAG}.run_key": run.run_key,
            f"{TAG}.job_name": self.training["job_name"],
        }
        version_tags = {**identity, **{f"{GATE_TAG}.{g}": "pending" for g in self.gates}}
        result = self.hook.log_candidate(
            experiment=self.experiment,
            run_name=f"{run.dag_id}/{run.run_key}",
            params=params,
            metrics=metrics,
            tags=identity,
            model_dir=model_dir,
            flavor=self.flavor,
            sample=sample,
            model_name=self.model_name,
            version_tags=version_tags,
            artifacts={"training": output_dir / "metrics.json"},
        )
        MlflowRunLink.persist(context, result.get("run_url"))
        MlflowCandidateVersionLink.persist(context, result.get("version_url"))
        self.log.info("Registered %s version %s (run %s)", self.model_name, result["version"], result["run_id"])
        return result

    def _existing_version(self, run_key: str) -> dict[str, Any] | None:
        client = self.hook.client
        try:
            versions = client.search_model_versions(f"name = '{self.model_name}'")
        except Exception:  # noqa: BLE001 - a registry without the model yet
            return None
        job_name = self.training["job_name"]
        for v in versions:
            tags = v.tags or {}
            # The same run *and* job: a cleared run that trained again registers its new model.
            if tags.get(f"{TAG}.run_key") == run_key and tags.get(f"{TAG}.job_name") == job_name:
                run = client.get_run(v.run_id)
                return {
                    "run_id": v.run_id,
                    "experiment_id": run.info.experiment_id,
                    "model_uri": v.source,
                    "model_name": self.model_name,
                    "version": str(v.version),
                    "run_url": self.hook.run_url(run.info.experiment_id, v.run_id),
                    "version_url": self.hook.version_url(self.model_name, v.version),
                }
        return None


class PromoteModelOperator(RetrainBaseOperator):
    """Move the ``champion`` alias to the candidate only if every gate passed and it beats the champion.

    Decisions are recorded on the model versions as tags (the audit trail MLflow itself lacks): the
    candidate gets ``retrain.promotion.*`` (decision, reason, compared version and metric values, DAG run),
    and a replaced champion gets ``retrain.champion.replaced_by``/``replaced_at``. Just before moving the
    alias it is read again; if another run moved it meanwhile, nothing is changed and the task fails.

    :param candidate: the result of :class:`RegisterModelOperator`.
    :param primary_metric: metric the candidate and the champion are compared on.
    :param greater_is_better: direction of ``primary_metric``.
    :param min_improvement: the candidate must beat the champion by at least this much.
    :param required_gates: gates whose ``retrain.gate.<name>`` tag must read ``passed``.
    :param alias: the alias to move.
    :return: the decision, the versions before/after and the compared numbers.
    """

    template_fields = ("candidate",)
    operator_extra_links = (MlflowCandidateVersionLink(), MlflowChampionVersionLink())
    ui_color = "#ffd700"

    def __init__(
        self,
        *,
        candidate: dict[str, Any] | Any,
        primary_metric: str,
        greater_is_better: bool = True,
        min_improvement: float = 0.0,
        required_gates: list[str] | None = None,
        alias: str = "champion",
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.candidate = candidate
        self.primary_metric = primary_metric
        self.greater_is_better = greater_is_better
        self.min_improvement = min_improvement
        self.required_gates = required_gates or ["metrics"]
        self.alias = alias
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(self.mlflow_conn_id)

    def _metric(self, run_id: str, who: str) -> float:
        value = self.hook.run_metrics(run_id).get(self.primary_metric)
        if value is None or not math.isfinite(value):
            raise AirflowFailException(
                f"{who} has no finite {self.primary_metric!r} metric in MLflow run {run_id}: cannot compare, "
                "nothing promoted"
            )
        return float(value)

    def execute(self, context) -> dict[str, Any]:
        run = self.run_identity(context)
        name = self.candidate["model_name"]
        version = str(self.candidate["version"])
        mv = self.hook.get_version(name, version)
        tags = mv.tags or {}
        not_passed = {g: tags.get(f"{GATE_TAG}.{g}", "missing") for g in self.required_gates}
        not_passed = {g: s for g, s in not_passed.items() if s != "passed"}
        if not_passed:
            raise AirflowFailException(
                f"{name} v{version} cannot become {self.alias}: gates not passed {not_passed}"
            )
        candidate_value = self._metric(mv.run_id, f"candidate {name} v{version}")
        champion = self.hook.get_version_by_alias(name, self.alias)
        decided_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        decision: dict[str, Any] = {
            "model_name": name,
            "candidate_version": version,
            "primary_metric": self.primary_metric,
            "greater_is_better": self.greater_is_better,
            "min_improvement": self.min_improvement,
            "candidate_value": candidate_value,
            "champion_before": None,
            "champion_value": None,
            "delta": None,
            "decided_at": decided_at,
            "dag_run": f"{run.dag_id}/{run.run_id}",
        }
        if champion is not None and str(champion.version) == version:
            decision.update(promoted=False, champion_after=version, decision="already_champion",
                            reason=f"v{version} is already {self.alias}", champion_before=version)
            MlflowCandidateVersionLink.persist(context, self.hook.version_url(name, version))
            MlflowChampionVersionLink.persist(context, self.hook.version_url(name, version))
            return decision
        if champion is None:
            promote, reason = True, f"no {self.alias} yet"
        else:
            champion_value = self._metric(champion.run_id, f"{self.alias} {name} v{champion.version}")
            delta = candidate_value - champion_value if self.greater_is_better else champion_value - candidate_value
            decision.update(champion_before=str(champion.version), champion_value=champion_value, delta=delta)
            promote = delta >= self.min_improvement and delta > 0
            sign = "beats" if promote else "does not beat"
            reason = (
                f"candidate v{version} {self.primary_metric}={candidate_value:.4f} {sign} {self.alias} "
                f"v{champion.version} {self.primary_metric}={champion_value:.4f} by the required "
                f"{self.min_improvement} (delta {delta:+.4f})"
            )
        decision.update(
            promoted=promote,
            decision="promoted" if promote else "kept_champion",
            reason=reason,
            champion_after=version if promote else decision["champion_before"],
        )
        audit = {
            "retrain.promotion.decision": decision["decision"],
            "retrain.promotion.reason": reason,
            "retrain.promotion.compared_to": decision["champion_before"] or "none",
            "retrain.promotion.decided_at": decided_at,
            "retrain.promotion.dag_run": decision["dag_run"],
        }
        if promote:
            current = self.hook.get_version_by_alias(name, self.alias)
            before = str(current.version) if current else None
            if before != decision["champion_before"]:
                raise AirflowFailException(
                    f"{self.alias} of {name} moved from v{decision['champion_before']} to v{before} while this "
                    "run decided; nothing promoted, rerun the task to decide against the new champion"
                )
            self.hook.set_alias(name, self.alias, version)
            audit["retrain.champion.promoted_at"] = decided_at
            audit["retrain.champion.previous_version"] = decision["champion_before"] or "none"
            if champion is not None:
                self.hook.set_version_tags(
                    name,
                    champion.version,
                    {"retrain.champion.replaced_by": version, "retrain.champion.replaced_at": decided_at},
                )
        self.hook.set_version_tags(name, version, audit)
        self.hook.log_dict(mv.run_id, decision, "promotion/decision.json")
        MlflowCandidateVersionLink.persist(context, self.hook.version_url(name, version))
        if decision["champion_after"]:
            MlflowChampionVersionLink.persist(context, self.hook.version_url(name, decision["champion_after"]))
        self.log.info("%s: %s", decision["decision"], reason)
        self.log.info("Decision: %s", json.dumps(decision))
        return decision
