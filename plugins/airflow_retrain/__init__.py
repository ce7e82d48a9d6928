"""airflow-retrain: dbt features -> GPU training -> gated MLflow promotion -> GPU teardown.

Importing this package must stay cheap: Airflow imports it (through the provider entry point) in every
process, so nothing heavy (mlflow, boto3, pandas, dbt, xgboost) is imported here.
"""

__version__ = "0.1.0"
