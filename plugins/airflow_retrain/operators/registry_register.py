"""Register every trained candidate in MLflow and make it ``challenger`` (recorded in the promotion history)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_retrain import artifacts
from airflow_retrain.hooks.mlflow import RegistryError, code_version
from airflow_retrain.links.mlflow import MlflowCandidateVersionLink, MlflowRunLink
from airflow_retrain.operators.registry_base import RegistryBaseOperator
from airflow_retrain.registry.inputs import version_tags as version_inputs_tags
from airflow_retrain.registry.onnx import record_scoring_runtime
from airflow_retrain.registry.signature import signature_from_parquet
from airflow_retrain.registry.tags import CHALLENGER, GATE_OUTCOME_TAG, GATE_TAG, TAG


class RegisterModelOperator(RegistryBaseOperator):
    """Log a trained candidate to MLflow (params, metrics, model with signature), register it, alias it.

    Every candidate is registered, whatever the gates later decide; it becomes ``challenger`` (recorded in
    the promotion history) and its gate tags start as ``pending``. Its version tags say where it came
    from: pipeline, DAG run, code version (git SHA of ``RETRAIN_HOME``, else ``unknown``) and the data
    snapshot (relation + content fingerprint), and the training inputs' fingerprints when ``train`` computed
    them (:mod:`airflow_retrain.registry.inputs`). A retry of the same DAG run reuses the version it
    already registered from the same training job, even when the failure hid a successful creation.
    Each new version is also exported to ONNX where its flavour converts and tagged with the scoring
    runtime measured faster on the holdout (:mod:`airflow_retrain.registry.onnx`); that never fails the task.
    The model, its ``metrics.json`` and the dataset channels (for the signature) are downloaded from the
    artifact store into a temporary folder; if they are gone (the run's teardown removed them), the task
    fails without retry, naming the missing URI -- clear the ``train`` task too, and the run trains again.

    :param model_name: registered model name.
    :param training: the result of :class:`TrainModelOperator` (``model_uri``, ``output_uri``).
    :param dataset: the result of :class:`ExportTrainingDatasetOperator` (Parquet channel URIs → signature).
    :param experiment: MLflow experiment name.
    :param flavor: MLflow flavor of the model files (``xgboost``).
    :param params_to_log: extra params to log (hyperparameters, spec fields).
    :param gates: names of the gates that will decide; each gets a ``pending`` tag.
    :param not_null_columns: columns the feature table's contract declares not null (signature).
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
        not_null_columns: list[str] | None = None,
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
        self.not_null_columns = not_null_columns

    def execute(self, context) -> dict[str, Any]:
        try:
            return self._execute(context)
        except RegistryError as e:
            raise RuntimeError(str(e)) from None  # transient by now only if the budget ran out: Airflow retries

    def _execute(self, context) -> dict[str, Any]:

        run = self.run_identity(context)
        holder = f"{run.dag_id}/{run.run_id}/{self.task_id}"
        existing = self.hook.find_version_by_tag(self.model_name, f"{TAG}.run_key", run.run_key)
        if existing is not None and (existing.tags or {}).get(f"{TAG}.job_name") != self.training["job_name"]:
            existing = None  # a cleared run that trained again registers its new model
        if existing is not None:
            result = self._result(existing)
            self.log.info("Run %s already registered %s v%s; reusing it", run.run_key, self.model_name, result["version"])
            self._make_challenger(result["version"], holder)
            return result
        local = Path(tempfile.mkdtemp(prefix="retrain-register-"))
        try:
            return self._register(context, run, holder, local)
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

    def _register(self, context, run, holder: str, local: Path) -> dict[str, Any]:
        import pandas as pd

        model_dir = self._download(self.training["model_uri"], local / "model", "the trained model")
        output_dir = self._download(self.training["output_uri"], local / "output", "the training output")
        channels = {
            c: self._download(uri, local / "data" / c, "the holdout channel" if c == "test" else f"the {c} channel")
            for c, uri in self.dataset["channels"].items()
            if c in ("train", "test")
        }
        drop = [self.dataset["id_column"], self.dataset["target_column"]]
        signature = signature_from_parquet([str(channels[c]) for c in ("train", "test") if c in channels], drop,
                                           self.not_null_columns)
        parquet = sorted(channels["test"].rglob("*.parquet"))
        if not parquet:
            raise AirflowFailException(f"the holdout channel {self.dataset['channels']['test']} holds no Parquet file")
        example = pd.read_parquet(parquet[0]).head(3).drop(columns=drop)
        info = self.training.get("info", {})
        extra = self.params_to_log or {}
        params = {
            **{f"hp.{k}": v for k, v in extra.get("hyperparameters", {}).items()},
            **{k: v for k, v in extra.items() if k != "hyperparameters"},
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
        cost = self.training.get("cost") or {}
        if cost.get("usd") is not None:  # an unknown price is logged as a param, never as $0
            metrics["training_cost_usd"] = float(cost["usd"])
            if cost.get("spot"):
                metrics["training_spot_savings_usd"] = float(cost.get("spot_savings_usd") or 0.0)
        params["training.cost"] = (
            f"{cost.get('price_source', 'unknown')} price, table {cost.get('price_table_version', '?')}, "
            f"{cost.get('instance_count', 1)} x {cost.get('instance_type', '?')} in {cost.get('region') or '?'}"
            + (", spot" if cost.get("spot") else "")
        )
        identity = {
            f"{TAG}.pipeline": self.pipeline,
            f"{TAG}.dag_id": run.dag_id,
            f"{TAG}.run_id": run.run_id,
            f"{TAG}.run_key": run.run_key,
            f"{TAG}.job_name": self.training["job_name"],
            f"{TAG}.code_version": code_version(),
            f"{TAG}.data.relation": self.dataset["relation"],
            f"{TAG}.data.fingerprint": self.dataset["fingerprint"],
            # what the next run compares to skip an unchanged retrain (registry.inputs)
            **version_inputs_tags(self.training.get("inputs") or {}),
        }
        version_tags = {
            **identity,
            **{f"{GATE_TAG}.{g}": "pending" for g in self.gates},
            GATE_OUTCOME_TAG: "pending",
        }
        result = self.hook.log_candidate(
            experiment=self.experiment,
            run_name=f"{run.dag_id}/{run.run_key}",
            params=params,
            metrics=metrics,
            tags=identity,
            model_dir=model_dir,
            flavor=self.flavor,
            signature=signature,
            input_example=example,
            model_name=self.model_name,
            version_tags=version_tags,
            artifacts={"training": output_dir / "metrics.json"},
        )
        holdout = pd.concat([pd.read_parquet(p) for p in parquet], ignore_index=True).drop(columns=drop)
        record_scoring_runtime(self.hook, model_name=self.model_name, version=result["version"],
                               run_id=result["run_id"], flavor=self.flavor, model_dir=model_dir, holdout=holdout,
                               log=self.log)
        self._make_challenger(result["version"], holder)
        MlflowRunLink.persist(context, result.get("run_url"))
        MlflowCandidateVersionLink.persist(context, result.get("version_url"))
        self.log.info("Registered %s version %s (run %s) as %s", self.model_name, result["version"],
                      result["run_id"], CHALLENGER)
        return result

    def _make_challenger(self, version: str, holder: str) -> None:
        with self._lease(self.model_name, holder) as lease:
            current = self.hook.get_version_by_alias(self.model_name, CHALLENGER)
            if current is not None and int(current.version) >= int(version):
                return  # already ours, or a newer candidate is the challenger
            self.hook.move_alias(lease, CHALLENGER, version, {
                "action": "challenger", "by": holder, "reason": "registered candidate",
            })

    def _result(self, mv) -> dict[str, Any]:
        run = self.hook.call(f"get run {mv.run_id}", self.hook.client.get_run, mv.run_id)
        return {
            "run_id": mv.run_id,
            "experiment_id": run.info.experiment_id,
            "model_uri": f"models:/{self.model_name}/{mv.version}",
            "source": mv.source,
            "model_name": self.model_name,
            "version": str(mv.version),
            "run_url": self.hook.run_url(run.info.experiment_id, mv.run_id),
            "version_url": self.hook.version_url(self.model_name, mv.version),
        }
