"""Extra link from a dbt node's task to the node in dbt docs (``make dbt-docs`` serves them)."""

from __future__ import annotations

from airflow_retrain.links.mlflow import _XComUrlLink


class DbtDocsLink(_XComUrlLink):
    """The node's page in dbt docs; the URL is pushed by the node's trigger when it completes."""

    name = "dbt docs"
    url_xcom_key = "dbt_docs_url"
