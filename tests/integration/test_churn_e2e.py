"""The whole churn DAG on the embedded defaults, run by Airflow (``dag.test()``), on the real data.

One module-scoped sequence (the ``scenario`` fixture) against the module's own registry (``mlflow_default``
points at a SQLite registry of this module, so runs of ``churn`` by other modules never move its version
numbers): a good run passes the data gates before training and the model gates after it, and promotes v1;
a run whose data gate fails stops before training; a run whose model gate fails registers v2 but leaves
``champion`` on v1; a run whose training fails registers nothing and its teardown still runs and cleans
up; a second good run measures drift against v1's training snapshot and re-scores v1 on its own holdout.
The runs always happen in that order, each once, however the tests are ordered or selected: a test asks
the scenario for its step, which runs the steps before it first; what a run left (states, report,
registry versions) is read as it finishes.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

# Runs here retrain the same inputs as an earlier champion of the session: force them to train.
FORCE = {"force": True}

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def specs_dirs(tmp_path_factory) -> dict[str, Path]:
    """One specs folder per variant of the churn pipeline. Every variant is the ``churn`` pipeline on the
    ``churn`` model (a registered model belongs to one spec, so the failing variants replace the spec between
    runs rather than sit beside it): the failures must leave that model's champion as it was."""
    base = yaml.safe_load((ROOT / "include/pipelines/churn.yaml").read_text())
    gate_fail = dict(base, retries=0)
    gate_fail["gates"] = {"metrics": {"roc_auc": {"min": 0.99}, "accuracy": {"min": 0.75}}}
    data_fail = dict(base, retries=0)
    data_fail["gates"] = dict(base["gates"], data=dict(base["gates"]["data"], label_rate={"min": 0.4, "max": 0.5}))
    train_fail = dict(base, retries=0)
    train_fail["training"] = dict(base["training"], entry_point="tests/fixtures/failing_train.py")
    folders = {}
    for variant, spec in {"good": base, "data_fail": data_fail, "gate_fail": gate_fail, "train_fail": train_fail}.items():
        folder = tmp_path_factory.mktemp(f"specs-{variant}")
        (folder / "churn.yaml").write_text(yaml.safe_dump(spec))
        folders[variant] = folder
    return folders


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> dict:
    """This module's MLflow registry: the ``mlflow_default`` connection and the URI to read it back."""
    base = tmp_path_factory.mktemp("churn-registry")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    return {"uri": uri, "conn": {"conn_type": "mlflow", "host": uri, "extra": {"artifact_root": (base / "artifacts").as_uri()}}}


@pytest.fixture(scope="module")
def bags(specs_dirs, registry, airflow_db, warehouse, dbt_manifest):
    """``bags(variant)``: the DagBag of the repo's DAG files over that variant's specs folder."""
    from airflow.dag_processing.dagbag import DagBag

    built = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(registry["conn"]))

        def bag_of(variant: str):
            if variant not in built:
                mp.setenv("RETRAIN_SPECS_DIR", str(specs_dirs[variant]))
                bag = DagBag(dag_folder=str(ROOT / "dags"))
                assert bag.import_errors == {}
                built[variant] = bag
            mp.setenv("RETRAIN_SPECS_DIR", str(specs_dirs[variant]))  # tasks re-read the spec they run
            return built[variant]

        yield bag_of


def run_dag(bag, dag_id):
    dr = bag.dags[dag_id].test(run_conf=FORCE)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    return dr, states


def mlflow_client(registry):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=registry["uri"], registry_uri=registry["uri"])


# The scenario's steps in the order they always run, and the spec variant each runs (all DAG churn_retrain).
STEPS = {"good": "good", "data_fail": "data_fail", "gate_fail": "gate_fail", "train_fail": "train_fail", "second": "good"}
DAG_ID = "churn_retrain"


@pytest.fixture(scope="module")
def scenario(bags, registry, state_dir):
    """``scenario(step)``: the runs of ``STEPS`` up to ``step`` happen (in order, each once per module), and
    what ``step``'s run left is returned, read right after it: ``dr``, ``states``, ``report`` and
    ``report_text`` (its DAG's latest report), ``versions`` (the registry's ``churn`` versions as listed) and ``champion``."""
    from mlflow.exceptions import MlflowException

    done: dict[str, SimpleNamespace] = {}

    def upto(step: str) -> SimpleNamespace:
        for name, variant in STEPS.items():
            dag_id = DAG_ID
            if name not in done:
                dr, states = run_dag(bags(variant), dag_id)
                client = mlflow_client(registry)
                versions = [str(v.version) for v in client.search_model_versions("name = 'churn'")]
                try:
                    champion = client.get_model_version_by_alias("churn", "champion")
                except MlflowException:  # none yet: the test that asked says what it expected
                    champion = None
                text = (state_dir / "artifacts" / dag_id / "latest_report.json").read_text()
                done[name] = SimpleNamespace(dr=dr, states=states, report_text=text, report=json.loads(text),
                                             versions=versions, champion=champion)
            if name == step:
                return done[name]
        raise KeyError(step)

    return upto


def all_removed(uris) -> bool:
    from airflow_retrain.artifacts import artifact_path

    return bool(uris) and not any(artifact_path(uri).exists() for uri in uris)


def test_good_run_promotes_first_champion(scenario, registry):
    run = scenario("good")
    dr, states = run.dr, run.states
    assert dr.state == "success", states
    assert set(states.values()) == {"success"}
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    # Data gates before training, model gates after registration.
    assert tis["gate_data"].end_date <= tis["train"].start_date
    assert tis["register"].end_date <= tis["gate_model"].start_date <= tis["promote"].start_date
    client = mlflow_client(registry)
    champion = run.champion
    assert str(champion.version) == "1"
    for gate in ("data", "metrics", "champion", "slices", "efficiency"):
        assert champion.tags[f"retrain.gate.{gate}"] == "passed", gate
    assert champion.tags["retrain.gate.champion.decision"] == "no_champion"
    assert champion.tags["retrain.snapshot"] == f"runs:/{champion.run_id}/snapshot/training_stats.json"
    evidence = client.get_run(champion.run_id).data.metrics
    assert evidence["gate.data.passed"] == 1.0 and evidence["gate.data.label_rate"] > 0.2
    assert evidence["gate.efficiency.model_mb"] < 5
    assert any(k.startswith("gate.slices.contract_two_year") for k in evidence)
    artifacts = {a.path for a in client.list_artifacts(champion.run_id, "gates")}
    assert artifacts == {f"gates/{g}.json" for g in ("data", "metrics", "champion", "slices", "efficiency")}
    assert champion.tags["retrain.promotion.decision"] == "promoted"
    logged = client.get_run(champion.run_id)
    assert logged.data.metrics["roc_auc"] > 0.80
    assert logged.data.params["dataset.rows_train"] == "5620"
    # The logged model carries a signature with the mart's 25 features (the champion alias's version,
    # loaded from where the registry stores it: no process-wide tracking URI left behind for other tests).
    import mlflow

    model = mlflow.pyfunc.load_model(client.get_model_version_download_uri("churn", champion.version))
    assert len(model.metadata.get_input_schema().inputs) == 25
    rep = run.report
    assert rep["stages"]["dbt_build"]["tests_failed"] == 0
    assert rep["stages"]["dbt_build"]["models_built"] == 2
    assert rep["stages"]["promote"]["champion_after"] == "1"
    text = run.report_text
    assert '"gate_data"' in text and '"gate_model"' in text
    teardown = rep["stages"]["teardown"]
    assert all_removed(teardown["scratch_removed"])
    assert teardown["jobs"][0]["state"] == "Completed"
    assert teardown["compute_seconds"] > 0


def test_data_gate_failure_stops_before_training(scenario):
    run = scenario("data_fail")
    dr, states = run.dr, run.states
    assert dr.state == "failed"
    assert states["gate_data"] == "failed"
    assert states["train"] == "upstream_failed" and states["register"] == "upstream_failed"
    assert states["teardown"] == "success" and states["report"] == "success"
    rep = run.report
    (verdict,) = rep["gate_verdicts"]["gate_data"]
    assert not verdict["passed"] and "label rate of 'churned'" in verdict["message"] and "< min 0.4" in verdict["message"]
    assert rep["stages"]["teardown"]["jobs"] == []  # no training job was started
    assert run.versions == ["1"]


def test_gate_failure_keeps_champion(scenario, registry):
    run = scenario("gate_fail")
    dr, states = run.dr, run.states
    assert dr.state == "failed"
    assert states["gate_model"] == "failed"
    assert states["promote"] == "upstream_failed"
    assert states["teardown"] == "success" and states["report"] == "success"
    assert str(run.champion.version) == "1"
    client = mlflow_client(registry)
    rejected = client.get_model_version("churn", "2")
    assert rejected.tags["retrain.gate.metrics"] == "failed"
    assert "roc_auc" in rejected.tags["retrain.gate.metrics.message"]
    assert "retrain.promotion.decision" not in rejected.tags


def test_training_failure_still_tears_down(scenario):
    run = scenario("train_fail")
    dr, states = run.dr, run.states
    assert dr.state == "failed"
    assert states["train"] == "failed"
    assert states["register"] == "upstream_failed"
    assert states["teardown"] == "success"
    teardown = run.report["stages"]["teardown"]
    assert [j["state"] for j in teardown["jobs"]] == ["Failed"]
    assert all_removed(teardown["scratch_removed"])
    assert sorted(run.versions) == ["1", "2"]
    assert str(run.champion.version) == "1"
    # The failing task recorded its error through Airflow's on_failure_callback; the outcome carries it.
    assert "ValueError: simulated training failure (CUDA out of memory)" in run.report["errors"]["train"]
    from airflow_retrain.report import run_outcome

    assert run_outcome(run.report) == f"failed at train: {run.report['errors']['train']} (no candidate; champion unchanged)"


def test_second_run_compares_with_the_champions_snapshot_and_rescores_it(scenario, registry):
    run = scenario("second")
    dr, states = run.dr, run.states
    assert dr.state == "success", states
    client = mlflow_client(registry)
    versions = sorted(int(v) for v in run.versions)
    candidate = client.get_model_version("churn", str(versions[-1]))
    # Same data: no drift against v1's training snapshot; v1 re-scored on this holdout equals the candidate.
    data = client.get_run(candidate.run_id).data.metrics
    assert data["gate.data.passed"] == 1.0 and data["gate.data.psi.tenure_months"] < 0.01
    assert candidate.tags["retrain.gate.champion.champion_version"] == "1"
    assert candidate.tags["retrain.gate.champion.decision"] == "does_not_beat"
    assert float(candidate.tags["retrain.gate.champion.delta"]) == 0.0
    assert str(run.champion.version) == "1"
