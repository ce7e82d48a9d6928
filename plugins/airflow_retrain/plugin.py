"""The Airflow plugin: the extra links (so the UI renders them on any worker setup) and the dashboard.

Registered once, through the ``airflow.plugins`` entry point of the installed package; the plugins folder's
``.airflowignore`` keeps Airflow from importing the package's modules a second time as folder plugins,
and ``setup.cfg`` keeps the editable install's ``*.egg-info`` out of the plugins folder (on ``sys.path``, it
made Airflow see a second distribution and report ``Plugin 'airflow_retrain' already registered``).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_retrain.links.mlflow import MlflowCandidateVersionLink, MlflowChampionVersionLink, MlflowRunLink


class AirflowRetrainPlugin(AirflowPlugin):
    name = "airflow_retrain"
    operator_extra_links = [MlflowRunLink(), MlflowCandidateVersionLink(), MlflowChampionVersionLink()]
