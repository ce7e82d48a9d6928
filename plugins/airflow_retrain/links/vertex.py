"""Extra links from the train task to its Vertex AI custom job: the console page and its Cloud Logging logs.

The XCom keys differ from the links' names on purpose: Airflow stores rendered link values under the
link's name, and a link whose key equals its name renders empty.
"""

from __future__ import annotations

from airflow_retrain.links.mlflow import _XComUrlLink


class VertexCustomJobLink(_XComUrlLink):
    """The custom job's page in the Vertex AI console."""

    name = "Vertex AI Custom Job"
    xcom_key = "vertex_custom_job_url"


class VertexCustomJobLogsLink(_XComUrlLink):
    """The custom job's logs in Cloud Logging (``resource.labels.job_id``)."""

    name = "Vertex AI Job Logs"
    xcom_key = "vertex_custom_job_logs_url"


#: ``TrainingBackend.job_links`` kinds -> the link that shows them.
JOB_LINKS = {"console": VertexCustomJobLink, "logs": VertexCustomJobLogsLink}
