"""Rollback DAGs: ``rollback_<pipeline>`` per valid spec (manual trigger; params ``version``, ``reason``).

Each restores the previous champion from the promotion history in MLflow, or a named version that once
passed its gates, under the model's promotion lease (see airflow_retrain.dag_factory.build_rollback_dag).
"""

from airflow_retrain.dag_factory import build_rollback_dags

build_rollback_dags(globals())
