"""Extra links from the train task to its SageMaker job: the console page and its CloudWatch logs.

Both stand on the Amazon provider's :class:`~airflow.providers.amazon.aws.links.base_aws.BaseAwsLink`: the
train task stores the link's parameters (region, partition's console domain, job name; from
``TrainingBackend.job_link_params``) when it submits or reattaches, and the link formats the URL from them,
so a job in ``aws-cn`` or ``aws-us-gov`` links to that partition's console. The XCom keys (``key``) differ
from the keys under which Airflow stores the rendered links (``_link_<class>``).

This module imports the Amazon provider: import it only for a SageMaker task (the provider is an extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context

#: The log group of every SageMaker training job, ``/`` encoded twice as the CloudWatch console expects.
_LOG_GROUP = "$252Faws$252Fsagemaker$252FTrainingJobs"


class SageMakerTrainingJobLink(BaseAwsLink):
    """The training job's page in the SageMaker console."""

    name = "SageMaker Training Job"
    key = "retrain_sagemaker_training_job"
    format_str = BASE_AWS_CONSOLE_LINK + "/sagemaker/home?region={region_name}#/jobs/{job_name}"


class SageMakerTrainingLogsLink(BaseAwsLink):
    """The training job's log streams in CloudWatch Logs (``/aws/sagemaker/TrainingJobs``, ``<job>/...``)."""

    name = "SageMaker Training Logs"
    key = "retrain_sagemaker_training_logs"
    format_str = (
        BASE_AWS_CONSOLE_LINK
        + "/cloudwatch/home?region={region_name}#logsV2:log-groups/log-group/"
        + _LOG_GROUP
        + "$3FlogStreamNameFilter$3D{job_name}"
    )

    def format_link(self, **kwargs: Any) -> str:
        if "job_name" not in kwargs:
            return ""
        return super().format_link(**{**kwargs, "job_name": quote(str(kwargs["job_name"]), safe="")})


#: The links a SageMaker train task shows, in order.
JOB_LINKS = (SageMakerTrainingJobLink, SageMakerTrainingLogsLink)


def persist_job_links(
    context: Context, operator: BaseOperator, *, region_name: str, aws_partition: str, job_name: str
) -> None:
    """Store the parameters of every SageMaker job link for the running task instance."""
    for link in JOB_LINKS:
        link.persist(
            context=context, operator=operator, region_name=region_name, aws_partition=aws_partition, job_name=job_name
        )
