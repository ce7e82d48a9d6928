"""The promotion protocol MLflow lacks, kept in the registry itself so it survives the Airflow database.

MLflow 3 has aliases but no compare-and-set and no alias history. This package adds both on top of a
:class:`~airflow_retrain.hooks.mlflow.MlflowHook` (passed in; nothing here builds a client):

- :mod:`.lease`: one promotion lease per registered model (a tag; write, settle, re-read);
- :mod:`.history`: the append-only promotion history (one tag per entry, written under the lease);
- :mod:`.signature`: a candidate's input signature from its Parquet dataset;
- :mod:`.tags` and :mod:`.errors`: the names and failures that operators and the hook share.

The modules import nothing from the rest of the package at runtime, so the hook can offer the protocol
as methods (``hook.lease(...)``, ``hook.promotion_history(...)``) without an import circle.
"""
