"""Scoring DAGs: ``score_<pipeline>`` per valid spec with a ``monitoring:`` block.

Each scores the population with the champion, measures drift and realised performance, and requests a
retrain through the pipeline's drift Asset (see airflow_retrain.monitoring.dag and docs/monitoring.md).
"""

from airflow_retrain.dag_factory import build_score_dags

build_score_dags(globals())
