"""Pipeline spec check: this file's Airflow import error names every broken spec file and field.

It defines no DAGs on purpose. Airflow 3 hides every DAG of a file that has an import error, so the error
is raised here, not in dags/retrain.py, and a broken spec never takes down the other pipelines.
"""

from airflow_retrain.dag_factory import raise_spec_errors

raise_spec_errors()
