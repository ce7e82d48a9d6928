"""MlflowHook: MLflow tracking and the model registry, from one Airflow connection.

Connection type ``mlflow``: ``host`` is the tracking URI (``http://mlflow:5000``, ``sqlite:///...``),
``login``/``password`` are basic-auth credentials for a server, extra ``{"ui_url": "..."}`` is where
people open the MLflow UI (for the extra links). Without the connection the embedded registry is used:
SQLite at ``<state dir>/mlflow/mlflow.db`` with artifacts under ``<state dir>/mlflow/artifacts``.

MLflow 3 has aliases but no compare-and-set and no alias history; the audit trail (version tags) and
the check that the alias did not move under us live here and in the promotion operator.
"""

from __future__ import annotations

import math
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowNotFoundException
from airflow.sdk import BaseHook

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

SUPPORTED_FLAVORS = ("xgboost",)


class MlflowHook(BaseHook):
    """Talk to an MLflow tracking server and registry.

    :param mlflow_conn_id: Airflow connection of type ``mlflow``. While the default ``mlflow_default`` is
        not defined, the embedded SQLite registry under the state dir is used (and logged as such); any
        other connection id that does not exist is an error.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {"host": "Tracking URI", "login": "Username"},
            "placeholders": {"host": "http://mlflow:5000", "extra": '{"ui_url": "https://mlflow.example.com"}'},
        }

    @cached_property
    def _settings(self) -> dict[str, Any]:
        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            if self.mlflow_conn_id != self.default_conn_name:
                raise
            from airflow_retrain.spec import state_dir

            base = state_dir() / "mlflow"
            base.mkdir(parents=True, exist_ok=True)
            self.log.info("Connection %r not defined: using the embedded MLflow registry in %s", self.mlflow_conn_id, base)
            return {
                "tracking_uri": f"sqlite:///{base / 'mlflow.db'}",
                "artifact_root": (base / "artifacts").as_uri(),
                "ui_url": os.environ.get("RETRAIN_MLFLOW_UI_URL"),
            }
        uri = conn.host or ""
        if conn.port and uri.startswith("http") and f":{conn.port}" not in uri:
            uri = f"{uri.rstrip('/')}:{conn.port}"
        if conn.login:
            os.environ["MLFLOW_TRACKING_USERNAME"] = conn.login
        if conn.password:
            os.environ["MLFLOW_TRACKING_PASSWORD"] = conn.password
        extra = conn.extra_dejson
        ui_url = extra.get("ui_url") or (uri if uri.startswith("http") else None)
        return {"tracking_uri": uri, "artifact_root": extra.get("artifact_root"), "ui_url": ui_url}

    @property
    def tracking_uri(self) -> str:
        return self._settings["tracking_uri"]

    def get_conn(self) -> MlflowClient:
        return self.client

    @cached_property
    def client(self) -> MlflowClient:
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    # -- tracking ---------------------------------------------------------------------------------
    def ensure_experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if root := self._settings.get("artifact_root"):
            location = f"{root.rstrip('/')}/{name.replace('/', '_')}"
        return self.client.create_experiment(name, artifact_location=location)

    def log_candidate(
        self,
        *,
        experiment: str,
        run_name: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        model_dir: str | os.PathLike,
        flavor: str,
        sample: pd.DataFrame,
        model_name: str,
        version_tags: dict[str, str],
        artifacts: dict[str, str | os.PathLike] | None = None,
    ) -> dict[str, Any]:
        """Log one candidate (params, metrics, model with signature) and register it as a new version."""
        import mlflow
        from mlflow.models import infer_signature

        if flavor not in SUPPORTED_FLAVORS:
            raise ValueError(f"unsupported model flavor {flavor!r}; supported: {', '.join(SUPPORTED_FLAVORS)}")
        client = self.client
        exp_id = self.ensure_experiment(experiment)
        run = client.create_run(exp_id, run_name=run_name, tags=tags)
        run_id = run.info.run_id
        try:
            for key, value in params.items():
                client.log_param(run_id, key, str(value)[:6000])
            for key, value in metrics.items():
                if value is not None and math.isfinite(float(value)):
                    client.log_metric(run_id, key, float(value))
            for name, path in (artifacts or {}).items():
                if Path(path).exists():
                    client.log_artifact(run_id, str(path), artifact_path=name)
            with mlflow.start_run(run_id=run_id):
                model = _load_native_model(flavor, Path(model_dir))
                prediction = model.predict(sample)
                signature = infer_signature(sample, prediction)
                info = mlflow.xgboost.log_model(
                    model,
                    name="model",
                    signature=signature,
                    input_example=sample.head(3),
                    model_format="json",
                    # The flavor's own requirements (pinned to what trained it): MLflow's inference of
                    # requirements re-imports the model in a subprocess and costs seconds per candidate.
                    pip_requirements=mlflow.xgboost.get_default_pip_requirements(),
                )
            version = mlflow.register_model(info.model_uri, model_name, tags=version_tags)
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED")
        return {
            "run_id": run_id,
            "experiment_id": exp_id,
            "model_uri": info.model_uri,
            "model_name": model_name,
            "version": str(version.version),
            "run_url": self.run_url(exp_id, run_id),
            "version_url": self.version_url(model_name, version.version),
        }

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    def log_dict(self, run_id: str, data: dict, artifact_file: str) -> None:
        self.client.log_dict(run_id, data, artifact_file)

    def set_run_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    # -- registry ---------------------------------------------------------------------------------
    def get_version(self, model_name: str, version: str | int) -> ModelVersion:
        return self.client.get_model_version(model_name, str(version))

    def get_version_by_alias(self, model_name: str, alias: str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(model_name, alias)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    def set_version_tags(self, model_name: str, version: str | int, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(model_name, str(version), key, str(value))

    def set_alias(self, model_name: str, alias: str, version: str | int) -> None:
        self.client.set_registered_model_alias(model_name, alias, str(version))

    # -- links ------------------------------------------------------------------------------------
    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        base = self._settings.get("ui_url")
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if base else None

    def version_url(self, model_name: str, version: str | int) -> str | None:
        base = self._settings.get("ui_url")
        return f"{base.rstrip('/')}/#/models/{model_name}/versions/{version}" if base else None


def _load_native_model(flavor: str, model_dir: Path):
    if flavor == "xgboost":
        import xgboost

        path = model_dir / "model.json"
        if not path.exists():
            raise FileNotFoundError(f"training output has no {path.name} in {model_dir}")
        model = xgboost.XGBClassifier()
        model.load_model(str(path))
        return model
    raise ValueError(f"unsupported model flavor {flavor!r}")
