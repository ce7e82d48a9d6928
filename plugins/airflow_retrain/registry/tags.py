"""Names of the tags and aliases this package writes to MLflow."""

TAG = "retrain"
LEASE_TAG = f"{TAG}.lease"
HISTORY_TAG = f"{TAG}.history"
GATE_TAG = f"{TAG}.gate"
GATE_OUTCOME_TAG = f"{TAG}.gate_outcome"
CHAMPION = "champion"
CHALLENGER = "challenger"
