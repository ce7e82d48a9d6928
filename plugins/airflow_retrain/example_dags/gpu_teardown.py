"""gpu_teardown: the scheduled sweep that stops idle or expired GPU resources (see airflow_retrain.teardown).

The schedule and everything else come from include/teardown/policy.yaml (or RETRAIN_TEARDOWN_POLICY). A
malformed policy is this file's import error, naming the policy file and field; this file holds no other
DAG, so the retraining DAGs keep loading.
"""

from airflow_retrain.dag_factory import build_gpu_teardown_dag

build_gpu_teardown_dag(globals())
