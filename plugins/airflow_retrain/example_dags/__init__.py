"""The DAG files of an installed airflow-retrain, to copy into a deployment's DAGs folder.

``retrain.py`` builds one retraining DAG per spec in ``$RETRAIN_HOME/include/pipelines``;
``retrain_spec_check.py`` turns broken specs (and a missing or empty specs folder) into an import error naming
the file and field; ``rollback.py`` builds a manually triggered ``rollback_<pipeline>`` per valid spec;
``gpu_teardown.py`` is the scheduled sweep that stops idle or expired GPU resources::

    cp $(python -c 'import airflow_retrain.example_dags as d; print(*d.paths())') "$AIRFLOW_HOME/dags/"

They are the same files as the repository's ``dags/`` (a test keeps them identical, and complete).
"""

from pathlib import Path

FOLDER = Path(__file__).parent
DAG_FILES = ("retrain.py", "retrain_spec_check.py", "rollback.py", "gpu_teardown.py", "score.py")


def paths() -> list[Path]:
    """The DAG files' paths, to copy."""
    return [FOLDER / name for name in DAG_FILES]
