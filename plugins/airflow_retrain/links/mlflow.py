"""Extra links from a task to what it produced in MLflow: the run, the candidate version, the champion.

The operators store each target URL under their own XCom key (``url_xcom_key``) when they know it; the
link reads it back. That key must differ from :attr:`BaseOperatorLink.xcom_key` (``_link_<class>``), the
key under which Airflow's task runner stores the *rendered* link value and from which the UI reads it:
when the two were the same, the runner overwrote the URL with its own look-up and the scheduler logged
``XCom not found`` on every run. No URL is computed from connection secrets here, and every URL is passed
through :func:`~airflow_retrain.urls.redact_url` both when it is stored and when it is shown, so a
``user:password@`` (or a ``token=``) in a connection's ``ui_url`` never reaches XCom or the UI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from airflow.providers.common.compat.sdk import XCom
from airflow.sdk import BaseOperatorLink

from airflow_retrain.urls import redact_url

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.sdk import BaseOperator


class _XComUrlLink(BaseOperatorLink):
    """A link whose target URL a task stored in XCom under :attr:`url_xcom_key`.

    For targets no provider has a link for (MLflow, dbt docs): the whole URL is stored, redacted.
    """

    url_xcom_key: ClassVar[str]

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        url = XCom.get_value(key=self.url_xcom_key, ti_key=ti_key)
        # Redacted again on the way out: values stored before redaction existed are still in XCom.
        return (redact_url(url) if isinstance(url, str) else None) or ""

    @classmethod
    def persist(cls, context, url: str | None) -> None:
        """Store the link target for the running task instance, without credentials."""
        url = redact_url(url)
        if url:
            context["ti"].xcom_push(key=cls.url_xcom_key, value=url)


class MlflowRunLink(_XComUrlLink):
    """Link to the MLflow run that recorded a candidate's params, metrics and model."""

    name = "MLflow Run"
    url_xcom_key = "retrain_mlflow_run_url"


class MlflowCandidateVersionLink(_XComUrlLink):
    """Link to the model version this run registered (the candidate), whatever the gates decided."""

    name = "MLflow Candidate Version"
    url_xcom_key = "retrain_candidate_version_url"


class MlflowChampionVersionLink(_XComUrlLink):
    """Link to the version that holds ``champion`` after the promotion decision (new or kept)."""

    name = "MLflow Champion Version"
    url_xcom_key = "retrain_champion_version_url"


#: Kept for DAGs serialized before the candidate/champion split; no operator attaches it any more.
MlflowModelVersionLink = MlflowCandidateVersionLink
