"""dbt build through DbtHook/DbtBuildOperator on the real project, and the dataset export."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_retrain.hooks.dbt import DbtCommandError, DbtHook
from airflow_retrain.operators.dataset import ExportTrainingDatasetOperator
from airflow_retrain.operators.dbt import DbtBuildOperator

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def duckdb_conn(tmp_path, churn_loader, monkeypatch):
    """A private warehouse with the real data, reachable through an Airflow duckdb connection."""
    path = tmp_path / "wh.duckdb"
    churn_loader["load_to_duckdb"](str(path))
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_WAREHOUSE", f'{{"conn_type": "duckdb", "host": "{path}"}}')
    return path


@pytest.mark.slow
def test_dbt_build_summary_and_relations(duckdb_conn, make_context):
    op = DbtBuildOperator(
        task_id="dbt_build",
        pipeline="unit",
        project_dir=str(ROOT / "dbt"),
        select=["+churn_features"],
        warehouse_conn_id="unit_warehouse",
    )
    ctx = make_context()
    summary = op.execute(ctx)
    assert summary["success"] is True
    assert summary["models_built"] == summary["models_total"] == 2
    assert summary["tests_failed"] == 0 and summary["tests_passed"] == summary["tests_total"] > 10
    assert summary["relations"]["churn_features"] == '"wh"."marts"."churn_features"'
    assert ctx["ti"].xcoms["relations"] == summary["relations"]
    assert summary["warehouse"] == f"duckdb:{duckdb_conn} (profile retrain, target duckdb)"
    with duckdb.connect(str(duckdb_conn), read_only=True) as con:
        assert con.execute("select count(*) from marts.churn_features").fetchone()[0] == 7043


@pytest.mark.slow
def test_failing_dbt_test_names_the_test_and_does_not_retry(duckdb_conn, make_context):
    with duckdb.connect(str(duckdb_conn)) as con:  # a duplicated customer breaks uniqueness
        con.execute("insert into raw.telco_customers select * from raw.telco_customers limit 1")
    op = DbtBuildOperator(
        task_id="dbt_build", pipeline="unit", project_dir=str(ROOT / "dbt"), select=["+churn_features"],
        warehouse_conn_id="unit_warehouse",
    )
    with pytest.raises(AirflowFailException) as e:
        op.execute(make_context())
    message = str(e.value)
    assert "dbt build failed" in message
    assert "unique" in message and "customer_id" in message


@pytest.mark.slow
def test_dbt_hook_reports_a_broken_project(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "dbt_project.yml").write_text("name: broken\nversion: '1'\nprofile: nope\n")
    hook = DbtHook(project)
    with pytest.raises(DbtCommandError, match="dbt build exited with code"):
        hook.run("build", target_path=tmp_path / "target")


def _features_table(path: Path, n: int = 500):
    df = pd.DataFrame(  # noqa: F841 - read by DuckDB's replacement scan below
        {
            "customer_id": [f"C{i:05d}" for i in range(n)],
            "tenure_months": range(n),
            "monthly_charges": [float(i % 90) for i in range(n)],
            "churned": [i % 4 == 0 for i in range(n)],
        }
    ).astype({"churned": int})
    with duckdb.connect(str(path)) as con:
        con.execute("create schema if not exists marts")
        con.execute("create or replace table marts.churn_features as select * from df")
    return '"wh"."marts"."churn_features"'


def export_op(**kw):
    args = dict(
        task_id="export_dataset",
        pipeline="unit",
        relations={"churn_features": '"wh"."marts"."churn_features"'},
        feature_table="churn_features",
        target_column="churned",
        id_column="customer_id",
        holdout_fraction=0.2,
        min_rows=100,
        warehouse_conn_id="unit_warehouse",
    )
    args.update(kw)
    return ExportTrainingDatasetOperator(**args)


def test_export_writes_deterministic_split(tmp_path, monkeypatch, make_context):
    path = tmp_path / "wh.duckdb"
    _features_table(path)
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_WAREHOUSE", f'{{"conn_type": "duckdb", "host": "{path}"}}')
    ctx = make_context(run_id="r1")
    result = export_op().execute(ctx)
    train = pd.read_parquet(result["channels"]["train"])
    test = pd.read_parquet(result["channels"]["test"])
    assert len(train) + len(test) == 500 and set(train.customer_id).isdisjoint(test.customer_id)
    assert 60 <= len(test) <= 140
    assert ctx["ti"].xcoms["channels"] == result["channels"]
    assert ctx["ti"].xcoms["fingerprint"] == result["fingerprint"]  # train reads it under its own key
    assert result["rows"] == {"train": len(train), "test": len(test)}
    # The split is by id hash: the same customers are held out in a later run.
    expected = {c for c in train.customer_id.tolist() + test.customer_id.tolist()
                if int.from_bytes(hashlib.sha256(c.encode()).digest()[:4], "big") % 10_000 < 2000}
    assert set(test.customer_id) == expected
    again = export_op().execute(make_context(run_id="r2"))
    assert again["fingerprint"] == result["fingerprint"]
    assert set(pd.read_parquet(again["channels"]["test"]).customer_id) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"relations": {}}, "feature table 'churn_features' was not built by the dbt stage"),
        ({"target_column": "label"}, "column 'label' not found"),
        ({"min_rows": 10_000}, "500 rows, fewer than dataset.min_rows=10000"),
    ],
)
def test_export_errors_name_the_problem(tmp_path, monkeypatch, make_context, kwargs, message):
    path = tmp_path / "wh.duckdb"
    _features_table(path)
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_WAREHOUSE", f'{{"conn_type": "duckdb", "host": "{path}"}}')
    with pytest.raises(AirflowFailException, match=message):
        export_op(**kwargs).execute(make_context())


def test_warehouse_default_connection_falls_back_to_embedded_duckdb(state_dir):
    from airflow_retrain.hooks.warehouse import WarehouseHook

    params = WarehouseHook().params
    assert params.kind == "duckdb" and params.duckdb_path == str(state_dir / "warehouse.duckdb")
    assert WarehouseHook().dbt_env() == {"RETRAIN_DBT_TARGET": "duckdb", "RETRAIN_DUCKDB_PATH": params.duckdb_path}


def test_warehouse_named_connection_must_exist():
    from airflow.exceptions import AirflowNotFoundException

    from airflow_retrain.hooks.warehouse import WarehouseHook

    with pytest.raises(AirflowNotFoundException):
        _ = WarehouseHook("no_such_warehouse").params


def test_postgres_connection_maps_onto_profile_env(monkeypatch):
    from airflow_retrain.hooks.warehouse import WarehouseHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_RETRAIN_WAREHOUSE",
        '{"conn_type": "postgres", "host": "db", "port": 5433, "login": "u", "password": "s3cret", '
        '"schema": "warehouse", "extra": {"schema": "analytics"}}',
    )
    hook = WarehouseHook()
    assert hook.params.describe() == "postgres://db:5433/warehouse (schema analytics)"
    assert "s3cret" not in hook.params.describe()
    assert hook.dbt_env() == {
        "RETRAIN_DBT_TARGET": "postgres",
        "RETRAIN_PG_HOST": "db",
        "RETRAIN_PG_PORT": "5433",
        "RETRAIN_PG_USER": "u",
        "RETRAIN_PG_DBNAME": "warehouse",
        "RETRAIN_PG_SCHEMA": "analytics",
        "RETRAIN_PG_PASSWORD": "s3cret",
    }


# --- issue 5, item 5: data errors are named and not retried ---------------------------------------


def _table(path: Path, df) -> None:
    with duckdb.connect(str(path)) as con:
        con.register("df_view", df)
        con.execute("create schema if not exists marts")
        con.execute("create or replace table marts.churn_features as select * from df_view")


def _base_frame(n: int = 200) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(n)],
            "tenure_months": range(n),
            "churned": [int(i % 4 == 0) for i in range(n)],
        }
    )


def _with(column: str, values) -> pd.DataFrame:
    df = _base_frame()
    df[column] = values
    return df


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (_with("churned", ["Yes" if i % 4 == 0 else "No" for i in range(200)]), {},
         r"target column 'churned' is (str|object) .*'Yes'.* must be a binary 0/1 label"),
        (_with("churned", [i % 3 for i in range(200)]), {}, r"target column 'churned' is not a binary 0/1 label .*2"),
        (_with("churned", [0.5] * 200), {}, "target column 'churned' is not a binary 0/1 label"),
        (_with("customer_id", [None] + [f"C{i}" for i in range(1, 200)]), {},
         "id column 'customer_id' has 1 NULL value"),
        (_with("customer_id", ["C1", "C1"] + [f"C{i}" for i in range(2, 200)]), {},
         r"id column 'customer_id' is not unique: 1 id\(s\) repeat, e.g. 'C1'"),
        (_base_frame(), {"target_column": "customer_id"}, "target_column and dataset.id_column are both 'customer_id'"),
        (_with("churned", [None] + [0] * 199), {}, "target column 'churned' has 1 null value"),
    ],
    ids=["string_target", "multiclass_target", "fractional_target", "null_id", "duplicate_id", "target_is_id",
         "null_target"],
)  # fmt: skip
def test_export_names_data_errors_and_does_not_retry(tmp_path, monkeypatch, make_context, frame, kwargs, message):
    path = tmp_path / "wh.duckdb"
    _table(path, frame)
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_WAREHOUSE", f'{{"conn_type": "duckdb", "host": "{path}"}}')
    with pytest.raises(AirflowFailException, match=message):  # AirflowFailException: no retry
        export_op(**kwargs).execute(make_context())


def test_export_accepts_boolean_labels(tmp_path, monkeypatch, make_context):
    path = tmp_path / "wh.duckdb"
    _table(path, _with("churned", [i % 4 == 0 for i in range(200)]))
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_WAREHOUSE", f'{{"conn_type": "duckdb", "host": "{path}"}}')
    result = export_op().execute(make_context())
    assert result["rows"]["train"] + result["rows"]["test"] == 200


# --- issue 5, item 8: the embedded DuckDB file lock -----------------------------------------------

_HOLD_LOCK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])  # a writer: holds the file lock
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def _hold_lock(path: Path, seconds: float):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@contextlib.contextmanager
def _warehouse_locked_for(tmp_path, monkeypatch, seconds: float) -> Iterator[Path]:
    """A 10-row DuckDB warehouse behind the connection ``unit_warehouse``, write-locked by another process for
    ``seconds`` (or until the block ends): yields its path."""
    path = tmp_path / "wh.duckdb"
    _features_table(path, n=10)
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_WAREHOUSE", f'{{"conn_type": "duckdb", "host": "{path}"}}')
    holder = _hold_lock(path, seconds)
    try:
        yield path
    finally:
        holder.kill()
        holder.wait()


def test_duckdb_lock_is_waited_for_then_read(tmp_path, monkeypatch):
    from airflow_retrain.hooks.warehouse import WarehouseHook

    with _warehouse_locked_for(tmp_path, monkeypatch, 1.5):
        df = WarehouseHook("unit_warehouse", lock_timeout_seconds=30).read_table('"wh"."marts"."churn_features"')
        assert len(df) == 10


def test_duckdb_lock_that_never_frees_is_a_clear_error(tmp_path, monkeypatch):
    from airflow_retrain.hooks.warehouse import WarehouseHook

    with _warehouse_locked_for(tmp_path, monkeypatch, 60) as path:
        with pytest.raises(TimeoutError, match=rf"DuckDB warehouse {path} stayed locked .*PID .*'retrain_embedded_warehouse' pool"):
            WarehouseHook("unit_warehouse", lock_timeout_seconds=1.0).read_table('"wh"."marts"."churn_features"')
