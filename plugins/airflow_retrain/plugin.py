"""The Airflow plugin: registers the extra links so the UI can render them on any worker setup."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_retrain.links.dbt import DbtDocsLink
from airflow_retrain.links.mlflow import MlflowModelVersionLink, MlflowRunLink
from airflow_retrain.links.sagemaker import SageMakerTrainingJobLink, SageMakerTrainingLogsLink


class AirflowRetrainPlugin(AirflowPlugin):
    name = "airflow_retrain"
    operator_extra_links = [
        MlflowRunLink(),
        MlflowModelVersionLink(),
        SageMakerTrainingJobLink(),
        SageMakerTrainingLogsLink(),
        DbtDocsLink(),
    ]
