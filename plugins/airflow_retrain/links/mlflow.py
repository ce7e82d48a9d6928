"""Extra links from a task to what it produced in MLflow.

The operators push the URL under a well-known XCom key when they know it; the link reads it back. No
URL is computed from connection secrets here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from airflow.providers.common.compat.sdk import XCom
from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.sdk import BaseOperator


class _XComUrlLink(BaseOperatorLink):
    xcom_key: ClassVar[str]

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        url = XCom.get_value(key=self.xcom_key, ti_key=ti_key)
        return url or ""

    @classmethod
    def persist(cls, context, url: str | None) -> None:
        """Store the link target for the running task instance."""
        if url:
            context["ti"].xcom_push(key=cls.xcom_key, value=url)


class MlflowRunLink(_XComUrlLink):
    """Link to the MLflow run that recorded a candidate's params, metrics and model."""

    name = "MLflow Run"
    xcom_key = "mlflow_run_url"


class MlflowModelVersionLink(_XComUrlLink):
    """Link to the registered MLflow model version a task created or promoted."""

    name = "MLflow Model Version"
    xcom_key = "mlflow_model_version_url"
