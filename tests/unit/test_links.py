"""Extra links: labelled, stored under keys of their own, and resolving to the URL the task stored."""

from __future__ import annotations

import pytest

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


def test_a_subclass_written_with_the_old_attribute_name_keeps_airflows_key():
    class ConsoleLink(_XComUrlLink):
        name = "Console"
        xcom_key = "console_url"

    assert ConsoleLink.url_xcom_key == "console_url"
    assert ConsoleLink().xcom_key == "_link_ConsoleLink"


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
