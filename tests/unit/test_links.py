"""Extra links: labelled, stored under keys of their own, and resolving to the URL the task stored.

The MLflow and dbt docs links store whole (redacted) URLs; the SageMaker and Vertex AI links stand on the
providers' links and store only the job's parameters, from which the console URL of the job's partition
(SageMaker) or of the Google console domain (Vertex AI) is formatted.
"""

from __future__ import annotations

import pytest

from airflow_retrain.links.dbt import DbtDocsLink
from airflow_retrain.links.mlflow import (
    MlflowCandidateVersionLink,
    MlflowChampionVersionLink,
    MlflowRunLink,
    _XComUrlLink,
)
from airflow_retrain.operators.registry import PromoteModelOperator, RegisterModelOperator

LINKS = [MlflowRunLink, MlflowCandidateVersionLink, MlflowChampionVersionLink]


@pytest.mark.parametrize("link_class", LINKS)
def test_url_key_never_collides_with_airflows_rendered_link_key(link_class):
    link = link_class()
    # Airflow stores the rendered link under ``xcom_key`` and the UI reads it from there.
    assert link.xcom_key == f"_link_{link_class.__name__}"
    assert link.url_xcom_key not in (link.xcom_key, link.name)


def test_links_are_labelled_distinctly():
    assert [c.name for c in LINKS] == ["MLflow Run", "MLflow Candidate Version", "MLflow Champion Version"]
    assert {link.name for link in PromoteModelOperator.operator_extra_links} == {
        "MLflow Candidate Version",
        "MLflow Champion Version",
    }
    assert {link.name for link in RegisterModelOperator.operator_extra_links} == {"MLflow Run", "MLflow Candidate Version"}


def test_url_links_declare_their_own_key():
    # The shim that read an older ``xcom_key = "..."`` attribute as the URL's key is gone: a link that
    # shadowed Airflow's rendered-value key would render empty.
    assert DbtDocsLink.url_xcom_key == "dbt_docs_url"
    assert DbtDocsLink().xcom_key == "_link_DbtDocsLink"
    assert "__init_subclass__" not in _XComUrlLink.__dict__


@pytest.mark.parametrize("link_class", LINKS)
def test_get_link_reads_the_stored_url(link_class, monkeypatch):
    from airflow_retrain.links import mlflow as links

    stored = {link_class.url_xcom_key: "http://mlflow.test/#/models/churn/versions/3"}
    seen = {}

    def get_value(*, key, ti_key):
        seen["ti_key"] = ti_key
        return stored.get(key)

    monkeypatch.setattr(links.XCom, "get_value", staticmethod(get_value))
    assert link_class().get_link(None, ti_key="ti-1") == "http://mlflow.test/#/models/churn/versions/3"
    assert seen["ti_key"] == "ti-1"
    stored.clear()
    assert link_class().get_link(None, ti_key="ti-1") == ""


def test_persist_skips_unknown_urls(make_context):
    ctx = make_context()
    MlflowRunLink.persist(ctx, None)
    MlflowRunLink.persist(ctx, "http://mlflow.test/#/experiments/1/runs/abc")
    assert ctx["ti"].xcoms == {"retrain_mlflow_run_url": "http://mlflow.test/#/experiments/1/runs/abc"}


# -- the cloud consoles' links, on the providers' bases ----------------------------------------------


@pytest.fixture
def xcom_from(monkeypatch):
    """Make the links read XCom from a fake task instance's pushes (what Airflow's XCom would return)."""
    from airflow.providers.common.compat.sdk import XCom

    def _use(ti):
        monkeypatch.setattr(XCom, "get_value", staticmethod(lambda *, key, ti_key: ti.xcoms.get(key)))

    return _use


def train_op(backend: str, backend_config: dict):
    from airflow_retrain.operators.training import TrainModelOperator

    return TrainModelOperator(task_id="train", pipeline="churn", entry_point="train.py", channels={},
                              backend=backend, backend_config=backend_config)


@pytest.mark.parametrize(
    ("region", "console"),
    [
        ("us-east-1", "https://console.aws.amazon.com"),
        ("cn-north-1", "https://console.amazonaws.cn"),
        ("us-gov-west-1", "https://console.amazonaws-us-gov.com"),
    ],
)
def test_sagemaker_links_follow_the_region_and_its_partition(region, console, monkeypatch, make_context, xcom_from):
    import json

    monkeypatch.setenv("AIRFLOW_CONN_AWS_LINKS", json.dumps({"conn_type": "aws", "login": "k", "password": "s"}))
    config = {"role_arn": "arn:aws:iam::123456789012:role/r", "bucket": "b", "connection_id": "aws_links",
              "region": region}
    op = train_op("sagemaker", config)
    ctx = make_context()
    op._job_links_module().persist_job_links(ctx, op, **op.training_backend.job_link_params("churn-abc-1"))
    xcom_from(ctx["ti"])
    job, logs = op.operator_extra_links
    assert job.get_link(op, ti_key="ti-1") == f"{console}/sagemaker/home?region={region}#/jobs/churn-abc-1"
    assert logs.get_link(op, ti_key="ti-1") == (
        f"{console}/cloudwatch/home?region={region}#logsV2:log-groups/log-group/"
        "$252Faws$252Fsagemaker$252FTrainingJobs$3FlogStreamNameFilter$3Dchurn-abc-1"
    )
    # Stored under keys of their own, never the keys Airflow renders the links into.
    assert set(ctx["ti"].xcoms) == {"retrain_sagemaker_training_job", "retrain_sagemaker_training_logs"}
    assert {job.xcom_key, logs.xcom_key}.isdisjoint(ctx["ti"].xcoms)


def test_vertex_links_are_the_providers_custom_job_link_and_a_logs_query(make_context, xcom_from):
    from airflow.providers.google.cloud.links.vertex_ai import VertexAICustomJobLink

    from airflow_retrain.links.vertex import VertexCustomJobLogsLink, persist_job_links

    op = train_op("vertex", {"staging_bucket": "gs://b", "region": "europe-west4"})
    assert [type(link) for link in op.operator_extra_links] == [VertexAICustomJobLink, VertexCustomJobLogsLink]
    ctx = make_context()
    persist_job_links(ctx, op, region="europe-west4", project_id="retrain-proj", custom_job_id="4242")
    xcom_from(ctx["ti"])
    job, logs = op.operator_extra_links
    assert job.get_link(op, ti_key="ti-1") == (
        "https://console.cloud.google.com/vertex-ai/locations/europe-west4/training/4242/cpu?project=retrain-proj"
    )
    assert logs.get_link(op, ti_key="ti-1") == (
        "https://console.cloud.google.com/logs/query;query=resource.labels.job_id%3D%224242%22?project=retrain-proj"
    )
    # Airflow then stores each rendered URL under the link's xcom_key (the same key for Google links);
    # the link shows that URL as it is.
    ctx["ti"].xcoms[logs.xcom_key] = "https://console.cloud.google.com/logs/query;query=x?project=p"
    assert logs.get_link(op, ti_key="ti-1") == "https://console.cloud.google.com/logs/query;query=x?project=p"


def test_a_local_train_task_shows_no_console_links():
    assert train_op("local", {}).operator_extra_links == ()


def test_the_plugin_needs_neither_cloud_provider():
    # Every Airflow process loads the plugin; the providers behind the console links are optional extras.
    import subprocess
    import sys

    code = ("import sys, airflow_retrain.plugin as p; print(sorted(m for m in sys.modules if m.startswith("
            "('airflow.providers.amazon.aws', 'airflow.providers.google.cloud', 'airflow_retrain.links.'))), "
            "[link.name for link in p.AirflowRetrainPlugin.operator_extra_links])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == (
        "['airflow_retrain.links.dbt', 'airflow_retrain.links.mlflow'] "
        "['MLflow Run', 'MLflow Candidate Version', 'MLflow Champion Version', 'dbt docs']"
    )
