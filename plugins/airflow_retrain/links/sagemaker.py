"""Extra links from the train task to its SageMaker job: the console page and its CloudWatch logs.

The train task pushes the URLs (``TrainingBackend.job_links``) when it submits or reattaches; the links
read them back. The XCom keys differ from the links' names on purpose: Airflow stores rendered link
values under the link's name, and a link whose key equals its name renders empty.
"""

from __future__ import annotations

from airflow_retrain.links.mlflow import _XComUrlLink


class SageMakerTrainingJobLink(_XComUrlLink):
    """The training job's page in the SageMaker console."""

    name = "SageMaker Training Job"
    xcom_key = "sagemaker_training_job_url"


class SageMakerTrainingLogsLink(_XComUrlLink):
    """The training job's log streams in CloudWatch Logs (``/aws/sagemaker/TrainingJobs``)."""

    name = "SageMaker Training Logs"
    xcom_key = "sagemaker_training_logs_url"


#: ``TrainingBackend.job_links`` kinds -> the link that shows them.
JOB_LINKS = {"console": SageMakerTrainingJobLink, "logs": SageMakerTrainingLogsLink}
