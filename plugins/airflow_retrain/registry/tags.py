"""Names of the tags and aliases this package writes to MLflow."""

from typing import Any

TAG = "retrain"
LEASE_TAG = f"{TAG}.lease"
HISTORY_TAG = f"{TAG}.history"
GATE_TAG = f"{TAG}.gate"
GATE_OUTCOME_TAG = f"{TAG}.gate_outcome"
CHAMPION = "champion"
CHALLENGER = "challenger"

#: The registry hook these modules work through: an ``airflow_retrain.hooks.mlflow.MlflowHook``, passed in.
#: Named here, not imported, so the protocol sits below the hook that calls it (no import circle).
MlflowHook = Any
