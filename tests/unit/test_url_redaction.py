"""No URL that is stored (extra-link XComs, the register result, the run report) keeps a password or a token.

The connection's ``ui_url`` and ``RETRAIN_MLFLOW_UI_URL`` are written by people; every stored or shown URL
passes through :func:`airflow_retrain.urls.redact_url`.
"""

from __future__ import annotations

import json

import pytest

from airflow_retrain.links.dbt import DbtDocsLink
from airflow_retrain.links.mlflow import MlflowCandidateVersionLink, MlflowChampionVersionLink, MlflowRunLink
from airflow_retrain.urls import redact_text, redact_url, redact_value

PASSWORD = "s3cret-pw"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"https://alice:{PASSWORD}@mlflow.example.com", "https://mlflow.example.com"),
        (f"https://alice:{PASSWORD}@mlflow.example.com:8443/#/models/churn", "https://mlflow.example.com:8443/#/models/churn"),
        ("https://alice@mlflow.example.com/", "https://mlflow.example.com/"),
        (f"http://a:p@{PASSWORD}@host:5000/x", "http://host:5000/x"),  # an unescaped "@" in the password
        (f"http://u:pa/ss{PASSWORD}@host/", None),  # an unescaped "/": unparseable, not half-shown
        (f"https://mlflow.test/?token={PASSWORD}&tab=runs", "https://mlflow.test/?tab=runs"),
        (f"https://mlflow.test/?Access_Token={PASSWORD}", "https://mlflow.test/"),
        (f"https://mlflow.test/#/runs?view=chart&id_token={PASSWORD}", "https://mlflow.test/#/runs?view=chart"),
        (f"https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA&X-Amz-Signature={PASSWORD}",
         "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"),
        (f"https://storage.googleapis.com/b/o?X-Goog-Signature={PASSWORD}&X-Goog-Date=1", "https://storage.googleapis.com/b/o?X-Goog-Date=1"),
        (f"https://acct.blob.core.windows.net/c/b?sv=2024&sig={PASSWORD}", "https://acct.blob.core.windows.net/c/b?sv=2024"),
        # Unchanged: nothing secret in them (and the SageMaker console's fragment stays byte for byte).
        ("https://eu-west-1.console.aws.amazon.com/sagemaker/home?region=eu-west-1#/jobs/churn-1",
         "https://eu-west-1.console.aws.amazon.com/sagemaker/home?region=eu-west-1#/jobs/churn-1"),
        ("models:/churn/3", "models:/churn/3"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        (None, None),
        ("", ""),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_redact_text_and_nested_values():
    text = f"MLflow http://bob:{PASSWORD}@mlflow:5000: refused (see https://x.test/?access_token={PASSWORD})."
    assert redact_text(text) == "MLflow http://mlflow:5000: refused (see https://x.test/)."
    value = {"a": [f"postgresql://u:{PASSWORD}@db/mlflow", 3, None, {"b": text}], "c": 1.5}
    assert PASSWORD not in json.dumps(redact_value(value))
    assert redact_value(value)["c"] == 1.5 and redact_value(value)["a"][1:3] == [3, None]


# The links that store whole URLs (no provider link exists for MLflow or dbt docs); the cloud consoles'
# links store only region, job and project, formatted by the providers' links (tests/unit/test_links.py).
LINKS = [MlflowRunLink, MlflowCandidateVersionLink, MlflowChampionVersionLink, DbtDocsLink]


@pytest.mark.parametrize("link_class", LINKS)
def test_links_store_and_show_no_credentials(link_class, make_context, monkeypatch):
    from airflow_retrain.links import mlflow as links

    ctx = make_context()
    link_class.persist(ctx, f"https://alice:{PASSWORD}@ui.example.com/#/x?token={PASSWORD}")
    assert ctx["ti"].xcoms == {link_class.url_xcom_key: "https://ui.example.com/#/x"}
    # A value stored before redaction existed is cleaned on the way to the UI.
    stored = {link_class.url_xcom_key: f"https://alice:{PASSWORD}@ui.example.com/#/y"}
    monkeypatch.setattr(links.XCom, "get_value", staticmethod(lambda *, key, ti_key: stored.get(key)))
    assert link_class().get_link(None, ti_key="ti-1") == "https://ui.example.com/#/y"


def test_mlflow_hook_links_from_a_ui_url_with_credentials(monkeypatch, tmp_path):
    from airflow_retrain.hooks.mlflow import MlflowHook

    extra = {"ui_url": f"https://alice:{PASSWORD}@mlflow.example.com/?token={PASSWORD}"}
    conn = {"conn_type": "mlflow", "host": f"sqlite:///{tmp_path / 'mlflow.db'}", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_REDACT", json.dumps(conn))
    hook = MlflowHook("mlflow_redact")
    assert hook.run_url("1", "abc") == "https://mlflow.example.com/#/experiments/1/runs/abc"
    assert hook.version_url("churn", 3) == "https://mlflow.example.com/#/models/churn/versions/3"


def test_embedded_registry_ui_url_from_the_environment(monkeypatch):
    from airflow_retrain.hooks.mlflow import MlflowHook

    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    monkeypatch.setenv("RETRAIN_MLFLOW_UI_URL", f"http://admin:{PASSWORD}@localhost:5000")
    hook = MlflowHook()
    assert hook.version_url("churn", "2") == "http://localhost:5000/#/models/churn/versions/2"


def test_run_report_stores_no_credentials(make_context, tmp_path):
    from airflow_retrain.operators.report import RunReportOperator
    from airflow_retrain.runs import RunIdentity

    stages = {
        "register": {"model_name": "churn", "version": "2", "run_id": "abc",
                     "run_url": f"https://alice:{PASSWORD}@mlflow.example.com/#/experiments/1/runs/abc",
                     "version_url": f"https://mlflow.example.com/#/models/churn/versions/2?token={PASSWORD}"},
        "train": {"job_name": "churn-1", "backend": "local", "info": {"device": "cpu"}, "compute_seconds": 1.0,
                  "cost": {"usd": 0.0}, "metrics": {"roc_auc": 0.8},
                  "links": {"logs": f"https://b.s3.amazonaws.com/log?X-Amz-Signature={PASSWORD}"}},
    }
    ctx = make_context(dag_id="churn_retrain", run_id="r1", pulled=stages)
    store = tmp_path / "store"
    op = RunReportOperator(task_id="report", pipeline="churn", stage_task_ids=list(stages),
                           artifact_root=store.as_uri())
    result = op.execute(ctx)
    run_key = RunIdentity("churn", "churn_retrain", "r1").run_key
    for stored in (store / "churn_retrain" / run_key / "report.json", store / "churn_retrain" / "latest_report.json"):
        assert PASSWORD not in stored.read_text()
    assert PASSWORD not in json.dumps(ctx["ti"].xcoms) and PASSWORD not in json.dumps(result)
    report = ctx["ti"].xcoms["run_report"]
    assert report["stages"]["register"]["run_url"] == "https://mlflow.example.com/#/experiments/1/runs/abc"
    assert report["stages"]["register"]["version"] == "2"
