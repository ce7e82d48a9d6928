"""Provider metadata for the ``apache_airflow_provider`` entry point.

Airflow validates this dict against ``airflow/provider_info.schema.json`` when it discovers providers
(``ProvidersManager``); ``tests/unit/test_provider_info.py`` does the same, and checks that every
``[retrain]`` option the package reads is declared under ``config``.
"""

from __future__ import annotations

from airflow_retrain import __version__

_RETRAIN = "Airflow Retrain"
_DBT = "dbt"
_DUCKDB = "DuckDB"
_MLFLOW = "MLflow"


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-retrain",
        "name": _RETRAIN,
        "description": "Scheduled model retraining: dbt features, managed GPU training, gated MLflow "
        "promotion and GPU teardown.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": _RETRAIN, "tags": ["machine-learning"]},
            {"integration-name": _DBT, "external-doc-url": "https://docs.getdbt.com/", "tags": ["dbt"]},
            {"integration-name": _DUCKDB, "external-doc-url": "https://duckdb.org/docs/", "tags": ["software"]},
            {"integration-name": _MLFLOW, "external-doc-url": "https://mlflow.org/docs/latest/",
             "tags": ["machine-learning"]},
        ],
        "operators": [
            {
                "integration-name": _RETRAIN,
                "python-modules": [
                    "airflow_retrain.operators.dataset",
                    "airflow_retrain.operators.gates",
                    "airflow_retrain.operators.report",
                    "airflow_retrain.operators.sweep",
                    "airflow_retrain.operators.teardown",
                    "airflow_retrain.operators.training",
                ],
            },
            {"integration-name": _DBT, "python-modules": ["airflow_retrain.operators.dbt"]},
            {"integration-name": _MLFLOW, "python-modules": ["airflow_retrain.operators.registry"]},
        ],
        "hooks": [
            {
                "integration-name": _RETRAIN,
                "python-modules": ["airflow_retrain.hooks.warehouse", "airflow_retrain.hooks.airflow_api"],
            },
            {"integration-name": _DBT, "python-modules": ["airflow_retrain.hooks.dbt"]},
            {"integration-name": _DUCKDB, "python-modules": ["airflow_retrain.hooks.duckdb"]},
            {"integration-name": _MLFLOW,
             "python-modules": ["airflow_retrain.hooks.mlflow", "airflow_retrain.hooks.mlflow_client"]},
        ],
        "triggers": [
            {"integration-name": _RETRAIN, "python-modules": ["airflow_retrain.triggers.training"]},
            {"integration-name": _DBT, "python-modules": ["airflow_retrain.triggers.dbt"]},
        ],
        "connection-types": [
            {
                "connection-type": "mlflow",
                "hook-class-name": "airflow_retrain.hooks.mlflow.MlflowHook",
                "hook-name": "MLflow (airflow-retrain)",
            },
            {
                # Our own type: "duckdb" belongs to airflow-provider-duckdb. Warehouse connections of type
                # "duckdb" are still read (airflow_retrain.hooks.warehouse.get_warehouse_hook).
                "connection-type": "retrain_duckdb",
                "hook-class-name": "airflow_retrain.hooks.duckdb.RetrainDuckDBHook",
                "hook-name": "DuckDB file (airflow-retrain)",
                # Declared here, not by the hook's get_ui_field_behaviour() (deprecated since Airflow 3.2).
                "ui-field-behaviour": {
                    "hidden-fields": ["port", "login", "password", "schema", "extra"],
                    "relabeling": {"host": "Database file path"},
                    "placeholders": {"host": "/opt/airflow/state/warehouse.duckdb"},
                },
            },
        ],
        "extra-links": [
            "airflow_retrain.links.dbt.DbtDocsLink",
            "airflow_retrain.links.mlflow.MlflowRunLink",
            "airflow_retrain.links.mlflow.MlflowCandidateVersionLink",
            "airflow_retrain.links.mlflow.MlflowChampionVersionLink",
            "airflow_retrain.links.sagemaker.SageMakerTrainingJobLink",
            "airflow_retrain.links.sagemaker.SageMakerTrainingLogsLink",
            "airflow_retrain.links.vertex.VertexCustomJobLogsLink",
        ],
        "plugins": [
            {"name": "airflow_retrain", "plugin-class": "airflow_retrain.plugin.AirflowRetrainPlugin"},
        ],
        "config": {
            "retrain": {
                "description": "Settings of the airflow-retrain provider. Each option can also be set as "
                "``AIRFLOW__RETRAIN__<OPTION>``; the ``RETRAIN_*`` environment variable named in an option's "
                "description takes precedence over it.\n",
                "options": {
                    "home": {
                        "description": "The project folder holding ``include/pipelines`` (the pipeline specs), "
                        "the dbt project and the training scripts. ``RETRAIN_HOME`` takes precedence. Unset: "
                        "the checkout the package was installed from in editable mode; an installed wheel "
                        "needs it.\n",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/opt/airflow/retrain",
                        "default": None,
                    },
                    "state_dir": {
                        "description": "Where runs keep scratch data and local training jobs, and where the "
                        "embedded DuckDB warehouse (``warehouse.duckdb``, used while the "
                        "``retrain_warehouse`` connection is not defined) lives. ``RETRAIN_STATE_DIR`` takes "
                        "precedence. Unset: ``<home>/.local``.\n",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/var/lib/airflow-retrain",
                        "default": None,
                    },
                    "airflow_api_url": {
                        "description": "Where the dashboard sends its REST calls to Airflow, with the "
                        "viewer's own token. ``RETRAIN_AIRFLOW_API_URL`` takes precedence. Unset: ``[api] "
                        "base_url``, else ``http://<[api] host>:<[api] port>``. Never taken from a request's "
                        "headers.\n",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "http://airflow-apiserver:8080",
                        "default": None,
                    },
                },
            },
        },
    }
