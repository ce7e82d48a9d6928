"""The base of the registry operators: a lazily built :class:`MlflowHook` and the promotion lease's settings."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_retrain.hooks.mlflow import MlflowHook
from airflow_retrain.operators.base import RetrainBaseOperator


class RegistryBaseOperator(RetrainBaseOperator):
    """An operator with a lazily built :class:`MlflowHook` and the lease settings.

    :param mlflow_conn_id: the MLflow connection.
    :param lease_wait_seconds: how long to wait for another run's promotion lease before failing.
    :param lease_settle_seconds: verify-after-write pause of the lease (see :meth:`MlflowHook.lease`).
    """

    def __init__(
        self,
        *,
        mlflow_conn_id: str = "mlflow_default",
        lease_wait_seconds: float = 300.0,
        lease_settle_seconds: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self.lease_wait_seconds = lease_wait_seconds
        self.lease_settle_seconds = lease_settle_seconds

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(self.mlflow_conn_id)

    def _lease(self, model_name: str, holder: str):
        return self.hook.lease(model_name, holder, wait_seconds=self.lease_wait_seconds,
                               settle_seconds=self.lease_settle_seconds)

    def _fail(self, message: str):
        raise AirflowFailException(message)
