"""The base of the registry operators: the promotion lease's settings (the MLflow hook is the base's)."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_retrain.operators.base import MlflowBaseOperator


class RegistryBaseOperator(MlflowBaseOperator):
    """An MLflow operator with the promotion lease's settings.

    :param lease_wait_seconds: how long to wait for another run's promotion lease before failing.
    :param lease_settle_seconds: verify-after-write pause of the lease (see :meth:`MlflowHook.lease`).
    """

    def __init__(
        self,
        *,
        lease_wait_seconds: float = 300.0,
        lease_settle_seconds: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lease_wait_seconds = lease_wait_seconds
        self.lease_settle_seconds = lease_settle_seconds

    def _lease(self, model_name: str, holder: str):
        return self.hook.lease(model_name, holder, wait_seconds=self.lease_wait_seconds,
                               settle_seconds=self.lease_settle_seconds)

    def _fail(self, message: str):
        raise AirflowFailException(message)
