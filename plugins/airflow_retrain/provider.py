"""Provider metadata for the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from airflow_retrain import __version__


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-retrain",
        "name": "Airflow Retrain",
        "description": "Scheduled model retraining: dbt features, managed GPU training, gated MLflow "
        "promotion and GPU teardown.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "mlflow",
                "hook-class-name": "airflow_retrain.hooks.mlflow.MlflowHook",
            },
            {
                "connection-type": "duckdb",
                "hook-class-name": "airflow_retrain.hooks.warehouse.WarehouseHook",
            },
        ],
        "extra-links": [
            "airflow_retrain.links.mlflow.MlflowRunLink",
            "airflow_retrain.links.mlflow.MlflowCandidateVersionLink",
            "airflow_retrain.links.mlflow.MlflowChampionVersionLink",
            "airflow_retrain.links.sagemaker.SageMakerTrainingJobLink",
            "airflow_retrain.links.sagemaker.SageMakerTrainingLogsLink",
            "airflow_retrain.links.vertex.VertexCustomJobLogsLink",
        ],
        "triggers": [
            {
                "integration-name": "Airflow Retrain",
                "python-modules": ["airflow_retrain.triggers.training", "airflow_retrain.triggers.dbt"],
            }
        ],
        "plugins": [
            {"name": "airflow_retrain", "plugin-class": "airflow_retrain.plugin.AirflowRetrainPlugin"},
        ],
    }
