"""Retraining DAGs: one per valid pipeline spec in include/pipelines/ (see airflow_retrain.dag_factory).

A broken spec gets no DAG; dags/retrain_spec_check.py reports it as an import error naming the spec file
and field, so the other pipelines' DAGs keep running.
"""

from airflow_retrain.dag_factory import build_dags

build_dags(globals())
