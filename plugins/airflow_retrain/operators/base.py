"""What every airflow-retrain operator shares: the pipeline, its run identity and its artifact store."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from airflow_retrain.artifacts import ArtifactStore
from airflow_retrain.failure import record_failure
from airflow_retrain.hooks.mlflow import MlflowHook
from airflow_retrain.runs import RunIdentity
from airflow_retrain.training import get_backend
from airflow_retrain.training.base import TrainingBackend


class RetrainBaseOperator(BaseOperator):
    """:param pipeline: the pipeline (spec) name; tags and scratch folders are derived from it.
    :param artifact_root: the artifact store's root URI (spec ``artifacts.root``); ``None``: the
        deployment's ``RETRAIN_ARTIFACT_ROOT``, else ``file://<state dir>/artifacts``.
    :param artifact_conn_id: the Airflow connection for it (default ``aws_default`` for ``s3://``,
        ``google_cloud_default`` for ``gs://``).

    A task that fails for good records its error's line as XCom ``retrain_error``
    (:func:`~airflow_retrain.failure.record_failure`, added to any ``on_failure_callback`` given), so the
    run's outcome says ``failed at <task>: <error>``.
    """

    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        pipeline: str,
        artifact_root: str | None = None,
        artifact_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if record_failure not in self.on_failure_callback:
            self.on_failure_callback = [record_failure, *self.on_failure_callback]
        self.pipeline = pipeline
        self.artifact_root = artifact_root
        self.artifact_conn_id = artifact_conn_id

    def run_identity(self, context) -> RunIdentity:
        return RunIdentity.from_context(context, self.pipeline)

    @cached_property
    def artifact_store(self) -> ArtifactStore:
        """Resolved when a task runs (the deployment's environment is the worker's), never at parse time."""
        return ArtifactStore.resolve(self.artifact_root, self.artifact_conn_id)


class MlflowBaseOperator(RetrainBaseOperator):
    """An operator that talks to MLflow through a :class:`MlflowHook` built on first use (never in ``__init__``).

    :param mlflow_conn_id: the MLflow connection.
    """

    def __init__(self, *, mlflow_conn_id: str = MlflowHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(self.mlflow_conn_id)


class TrainingBackendOperator(RetrainBaseOperator):
    """An operator that talks to a training backend, built on first use (never in ``__init__``).

    :param backend: training backend name (``local``).
    :param backend_config: backend settings, e.g. ``{"jobs_dir": ...}`` for the local backend.
    :param hourly_price_usd: overrides the price table in cost estimates.
    """

    def __init__(
        self,
        *,
        backend: str = "local",
        backend_config: dict[str, Any] | None = None,
        hourly_price_usd: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.backend = backend
        self.backend_config = backend_config
        self.hourly_price_usd = hourly_price_usd

    @cached_property
    def training_backend(self) -> TrainingBackend:
        return get_backend(self.backend, **(self.backend_config or {}))
