"""Extra links from the train task to its Vertex AI custom job: the console page and its Cloud Logging logs.

The console page is the Google provider's own
:class:`~airflow.providers.google.cloud.links.vertex_ai.VertexAICustomJobLink`; the logs link stands on the
same base (:class:`~airflow.providers.google.cloud.links.base.BaseGoogleLink`). The train task stores the
links' parameters (region, project, custom job id; from ``TrainingBackend.job_link_params``) and the links
format the URLs, on the console domain the Google provider configures.

This module imports the Google provider: import it only for a Vertex task (the provider is an extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.providers.google.cloud.links.base import BaseGoogleLink
from airflow.providers.google.cloud.links.vertex_ai import VertexAICustomJobLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context


class VertexCustomJobLogsLink(BaseGoogleLink):
    """The custom job's logs in Cloud Logging (``resource.labels.job_id``)."""

    name = "Vertex AI Job Logs"
    key = "retrain_vertex_custom_job_logs"
    format_str = "/logs/query;query={query}?project={project_id}"

    @classmethod
    def persist(cls, context: Context, **value: Any) -> None:
        """Store the project and the Cloud Logging query that selects the job's entries."""
        query = quote(f'resource.labels.job_id="{value["custom_job_id"]}"', safe="")
        super().persist(context=context, project_id=value["project_id"], query=query)


#: The links a Vertex AI train task shows, in order.
JOB_LINKS = (VertexAICustomJobLink, VertexCustomJobLogsLink)


def persist_job_links(
    context: Context, operator: BaseOperator, *, region: str, project_id: str, custom_job_id: str
) -> None:
    """Store the parameters of every Vertex AI job link for the running task instance."""
    for link in JOB_LINKS:
        link.persist(context=context, region=region, project_id=project_id, custom_job_id=custom_job_id)
