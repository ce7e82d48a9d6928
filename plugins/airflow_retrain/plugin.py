"""The Airflow plugin: the extra links (so the UI renders them on any worker setup) and the dashboard.

The train task's cloud console links (``airflow_retrain.links.sagemaker``/``.vertex``) are not listed: they
stand on the Amazon and Google providers' links, optional extras this module must not need (every Airflow
process loads it, and the Google provider's links alone cost ~1 s to import). Airflow 3 renders a task's
links from its serialized DAG (each link's name and XCom key), so they show without being listed here; the
provider info's ``extra-links`` names them for the providers list.

Registered once, through the ``airflow.plugins`` entry point of the installed package; the plugins folder's
``.airflowignore`` keeps Airflow from importing the package's modules a second time as folder plugins,
and ``setup.cfg`` keeps the editable install's ``*.egg-info`` out of the plugins folder (on ``sys.path``, it
made Airflow see a second distribution and report ``Plugin 'airflow_retrain' already registered``).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_retrain.links.dbt import DbtDocsLink
from airflow_retrain.links.mlflow import MlflowCandidateVersionLink, MlflowChampionVersionLink, MlflowRunLink


def _fastapi_apps() -> list[dict]:
    """The dashboard app, only where Airflow serves plugin apps (the API server); workers skip FastAPI."""
    from airflow_retrain.ui.app import URL_PREFIX, create_app

    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Retraining dashboard"}]


class AirflowRetrainPlugin(AirflowPlugin):
    name = "airflow_retrain"
    operator_extra_links = [
        MlflowRunLink(),
        MlflowCandidateVersionLink(),
        MlflowChampionVersionLink(),
        DbtDocsLink(),
    ]
    fastapi_apps = _fastapi_apps()
    # Shows under the UI's Browse menu (and at /plugin/retraining), embedding the page in an iframe; the
    # page authenticates with the UI's _token cookie.
    external_views = [
        {
            "name": "Retraining",
            "href": "/retrain/",
            "url_route": "retraining",
            "destination": "nav",
            "category": "browse",
        }
    ]
