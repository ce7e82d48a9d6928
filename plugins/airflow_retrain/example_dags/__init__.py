"""The DAG files of an installed airflow-retrain, to copy into a deployment's DAGs folder.

``retrain.py`` builds one DAG per spec in ``$RETRAIN_HOME/include/pipelines``; ``retrain_spec_check.py``
turns broken specs (and a missing or empty specs folder) into an import error naming the file and field::

    cp "$(python -c 'import airflow_retrain.example_dags as d; print(d.FOLDER)')"/retrain*.py "$AIRFLOW_HOME/dags/"

They are the same files as the repository's ``dags/`` (a test keeps them identical).
"""

from pathlib import Path

FOLDER = Path(__file__).parent
DAG_FILES = ("retrain.py", "retrain_spec_check.py")
