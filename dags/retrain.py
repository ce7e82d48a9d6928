"""Retraining DAGs: one per pipeline spec in include/pipelines/ (see airflow_retrain.dag_factory).

A broken spec shows up as this file's import error, naming the spec file and field; the other
pipelines' DAGs keep loading.
"""

from airflow_retrain.dag_factory import build_dags

build_dags(globals())
