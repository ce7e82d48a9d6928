"""MLflow connection forms: what users write works, or is refused with the expected form; secrets masked."""

from __future__ import annotations

import json
import os

import pytest
from airflow.models.connection import Connection

from airflow_retrain.hooks.mlflow import (
    MlflowConnectionError,
    MlflowHook,
    quote_filter_value,
    resolve_connection,
)


def resolve_uri(uri: str):
    c = Connection(conn_id="m", uri=uri)
    return resolve_connection("m", c.conn_type, c.host, c.port, c.login, c.password, c.extra_dejson)


def resolve_fields(**fields):
    return resolve_connection("m", fields.pop("conn_type", "mlflow"), fields.pop("host", None), fields.pop("port", None),
                              fields.pop("login", None), fields.pop("password", None), fields.pop("extra", {}))


@pytest.mark.parametrize(
    ("uri", "tracking_uri"),
    [
        ("mlflow://127.0.0.1:5613", "http://127.0.0.1:5613"),  # lost scheme and port before
        ("mlflow+http://mlflow:5000", "http://mlflow:5000"),
        ("mlflow+https://mlflow.example.com", "https://mlflow.example.com"),
        ("mlflow://mlflow.example.com:443", "https://mlflow.example.com:443"),
        ("mlflow://mlflow:5000?scheme=https", "https://mlflow:5000"),
    ],
)
def test_airflow_uri_forms(uri, tracking_uri):
    assert resolve_uri(uri).tracking_uri == tracking_uri


def test_uri_with_credentials_becomes_creds_and_is_stripped():
    t = resolve_uri("mlflow://alice:s%3Acr%40t@127.0.0.1:5613")
    assert (t.tracking_uri, t.username, t.password) == ("http://127.0.0.1:5613", "alice", "s:cr@t")
    t = resolve_fields(host="http://bob:pw%2F1@mlflow:5000/prefix/")
    assert (t.tracking_uri, t.username, t.password) == ("http://mlflow:5000/prefix", "bob", "pw/1")
    assert "pw/1" in t.secrets and "pw/1" not in repr(t)


@pytest.mark.parametrize(
    ("fields", "tracking_uri"),
    [
        ({"host": "http://mlflow:5000"}, "http://mlflow:5000"),
        ({"host": "http://mlflow", "port": 5000}, "http://mlflow:5000"),
        ({"host": "mlflow", "port": 5000}, "http://mlflow:5000"),
        ({"host": "mlflow"}, "http://mlflow"),
        ({"host": "https://mlflow.example.com/"}, "https://mlflow.example.com"),
        ({"host": "sqlite:////tmp/m/mlflow.db"}, "sqlite:////tmp/m/mlflow.db"),
    ],
)
def test_host_forms(fields, tracking_uri):
    assert resolve_fields(**fields).tracking_uri == tracking_uri


def test_database_uri_password_is_a_secret_and_not_in_the_public_uri():
    t = resolve_fields(host="postgresql://ml:dbpw@db:5432/mlflow")
    assert t.tracking_uri == "postgresql://db:5432/mlflow" and t.client_uri.startswith("postgresql://ml:dbpw@")
    assert "dbpw" in t.secrets


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"host": ""}, "has no host"),
        ({"host": "ftp://mlflow"}, "unsupported URI scheme 'ftp'"),
        ({"host": "/var/mlflow"}, "looks like a path; use sqlite:///var/mlflow"),
        ({"host": "http://mlflow:5000", "port": 6000}, "port 6000 contradicts the port 5000"),
        ({"host": "mlflow", "extra": {"scheme": "grpc"}}, "scheme 'grpc' is not http or https"),
        ({"host": "http://mlflow:notaport"}, "Port could not be cast"),
    ],
)
def test_bad_forms_name_the_connection_and_the_expected_form(fields, message):
    with pytest.raises(MlflowConnectionError, match=message) as err:
        resolve_fields(**fields)
    assert "'m'" in str(err.value)


def test_hook_masks_derived_secrets_and_writes_no_environment(monkeypatch):
    from airflow.sdk._shared.secrets_masker.secrets_masker import redact

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_MASKED",
                       json.dumps({"conn_type": "mlflow", "host": "http://carol:uri-Secret-42@mlflow:5000"}))
    before = dict(os.environ)
    hook = MlflowHook("mlflow_masked")
    assert hook.tracking_uri == "http://mlflow:5000"
    _ = hook.client
    assert dict(os.environ) == before
    assert "uri-Secret-42" not in redact("password uri-Secret-42 in a log line")
    assert "uri-Secret-42" not in hook.scrub("API request to http://carol:uri-Secret-42@mlflow:5000 failed")


def test_filter_values_are_quoted():
    assert quote_filter_value("o'brien") == '"o\'brien"'
    assert quote_filter_value('say "hi"') == "'say \"hi\"'"
    with pytest.raises(ValueError, match="both quote kinds"):
        quote_filter_value("o'brien \"x\"")
