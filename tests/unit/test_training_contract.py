"""The container contract beside the churn script (include/training/churn/contract.py), stdlib only."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

CHURN = Path(__file__).resolve().parents[2] / "include" / "training" / "churn"


@pytest.fixture(scope="module")
def contract():
    spec = importlib.util.spec_from_file_location("churn_contract", CHURN / "contract.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["churn_contract"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("churn_contract", None)


def test_contract_imports_only_the_standard_library():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import contract; "
        "mods = set(sys.modules); bad = sorted(m for m in mods if m.split('.')[0] in "
        "('airflow', 'airflow_retrain', 'numpy', 'pandas', 'xgboost', 'boto3')); print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(CHURN)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_environment_from_sagemaker_variables(contract, tmp_path):
    env = contract.TrainingEnvironment.from_environ(
        {
            "SM_CHANNELS": '["train", "test"]',
            "SM_CHANNEL_TRAIN": str(tmp_path / "tr"),
            "SM_CHANNEL_EXTRA": str(tmp_path / "ex"),
            "SM_MODEL_DIR": str(tmp_path / "model"),
            "SM_OUTPUT_DATA_DIR": str(tmp_path / "out"),
            "SM_OUTPUT_FAILURE": str(tmp_path / "failure"),
            "SM_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
            "SM_TRAINING_JOB_NAME": "churn-abc-1",
            "SM_HOSTS": '["algo-1", "algo-2"]',
            "SM_CURRENT_HOST": "algo-2",
            "SM_NUM_GPUS": "4",
        },
        default_channels=("train",),
    )
    assert env.platform == "sagemaker"
    assert env.channel("train") == tmp_path / "tr"
    assert env.channel("test") == Path("/opt/ml/input/data/test")  # named in SM_CHANNELS, default folder
    assert env.channel("extra") == tmp_path / "ex"
    assert env.model_dir == tmp_path / "model" and env.output_data_dir == tmp_path / "out"
    assert env.checkpoint_dir == tmp_path / "ckpt"
    assert (env.job_name, env.current_host, env.hosts, env.num_gpus) == ("churn-abc-1", "algo-2", ("algo-1", "algo-2"), 4)
    with pytest.raises(contract.TrainingError, match="SM_CHANNEL_VALIDATION"):
        env.channel("validation")


def test_environment_defaults_are_the_container_paths(contract):
    env = contract.TrainingEnvironment.from_environ({}, default_channels=("train", "test"))
    assert env.channels == {"train": Path("/opt/ml/input/data/train"), "test": Path("/opt/ml/input/data/test")}
    assert env.model_dir == Path("/opt/ml/model")
    assert env.failure_file == Path("/opt/ml/output/failure")
    assert env.num_gpus is None and env.hosts == ("algo-1",)


def test_environment_bad_json_names_the_variable(contract):
    with pytest.raises(contract.TrainingError, match="SM_HOSTS is not valid JSON"):
        contract.TrainingEnvironment.from_environ({"SM_HOSTS": "[algo-1"})


@dataclasses.dataclass(frozen=True)
class Params:
    name: str = "x"
    depth: int = 3
    rate: float = 0.1
    flag: bool = False


def test_hyperparameters_merge_env_and_cli_with_types(contract, tmp_path, capsys):
    environ = {"SM_HPS": json.dumps({"depth": "6", "rate": 0.5, "name": '"quoted"', "sagemaker_program": "t.py", "zzz": 1})}
    hp = contract.resolve_hyperparameters(Params, ["--rate=0.25", "--flag", "yes", "train"], environ=environ)
    assert hp == Params(name="quoted", depth=6, rate=0.25, flag=True)
    out = capsys.readouterr().out
    assert "unknown hyperparameter 'zzz' ignored" in out and "SageMaker-internal keys ['sagemaker_program']" in out


def test_hyperparameters_from_config_file(contract, tmp_path):
    (tmp_path / "hyperparameters.json").write_text('{"depth": 9}')
    hp = contract.resolve_hyperparameters(Params, [], environ={"SM_INPUT_CONFIG_DIR": str(tmp_path)})
    assert hp.depth == 9


def test_hyperparameter_problems_are_reported_together(contract):
    def validate(hp):
        return ["rate must be < 1"] if hp.rate >= 1 else []

    with pytest.raises(contract.TrainingError) as err:
        contract.resolve_hyperparameters(Params, ["--depth", "2.5", "--rate", "3"], validate=validate, environ={})
    assert "depth=" in str(err.value) and "is not an integer" in str(err.value)
    assert "rate must be < 1" in str(err.value)
    with pytest.raises(contract.TrainingError, match="--depth has no value"):
        contract.resolve_hyperparameters(Params, ["--depth"], environ={})
    with pytest.raises(contract.TrainingError, match="SM_HPS must be a JSON object"):
        contract.resolve_hyperparameters(Params, [], environ={"SM_HPS": "[1]"})


def test_run_main_writes_the_failure_file(contract, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SM_OUTPUT_FAILURE", str(tmp_path / "out" / "failure"))

    def failing(argv):
        raise contract.TrainingError("bad\ninput   data")

    assert contract.run_main(failing, []) == 1
    assert (tmp_path / "out" / "failure").read_text() == "bad input data\n"
    assert capsys.readouterr().err.strip().splitlines()[-1] == "ERROR: bad input data"

    def crashing(argv):
        raise KeyError("k")

    assert contract.run_main(crashing, []) == 1
    assert (tmp_path / "out" / "failure").read_text().startswith("unexpected error: KeyError")
    assert contract.run_main(lambda argv: None, []) == 0


def test_write_metrics_is_strict_json(contract, tmp_path):
    env = contract.TrainingEnvironment.from_environ({"SM_OUTPUT_DATA_DIR": str(tmp_path)})
    path = contract.write_metrics(env, {"auc": 0.9, "f1": None}, {"n": 3})
    assert json.loads(path.read_text()) == {"metrics": {"auc": 0.9, "f1": None}, "info": {"n": 3}}
    with pytest.raises(ValueError):
        contract.write_metrics(env, {"auc": float("nan")}, {})


def test_choose_device(contract, monkeypatch):
    monkeypatch.setenv("SM_NUM_GPUS", "0")
    assert contract.choose_device("auto", usable_gpu=lambda: (True, "never asked")) == "cpu"
    assert contract.choose_device("cpu", usable_gpu=lambda: (True, "")) == "cpu"
    with pytest.raises(contract.TrainingError, match="device=cuda requested but no usable GPU: SM_NUM_GPUS=0"):
        contract.choose_device("cuda", usable_gpu=lambda: (True, ""))
    monkeypatch.setenv("SM_NUM_GPUS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(contract.shutil, "which", lambda name: None)
    assert contract.choose_device("auto", usable_gpu=lambda: (False, "probe failed")) == "cpu"
    assert contract.choose_device("auto", usable_gpu=lambda: (True, "probe ok")) == "cuda"


def _write_channels(base: Path) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    for channel, n in (("train", 400), ("test", 100)):
        x = rng.normal(size=(n, 3))
        y = (x[:, 0] + rng.normal(size=n) * 0.5 > 0).astype(int)
        (base / channel).mkdir(parents=True)
        frame = pd.DataFrame({"customer_id": range(n), "a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "churned": y})
        frame.to_parquet(base / channel / "part-0.parquet")


@pytest.mark.slow
def test_churn_folder_is_self_contained(tmp_path):
    """train.py + contract.py copied alone (as in sourcedir.tar.gz) train; a failure fills the failure file."""
    import shutil

    code = tmp_path / "code"
    code.mkdir()
    for name in ("train.py", "contract.py"):
        shutil.copy(CHURN / name, code / name)
    _write_channels(tmp_path / "data")
    env = {
        "PATH": "/usr/bin:/bin",
        "SM_CHANNEL_TRAIN": str(tmp_path / "data" / "train"),
        "SM_CHANNEL_TEST": str(tmp_path / "data" / "test"),
        "SM_MODEL_DIR": str(tmp_path / "model"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "output" / "data"),
        "SM_OUTPUT_FAILURE": str(tmp_path / "output" / "failure"),
        "SM_HPS": json.dumps({"n_estimators": "20", "device": "cpu"}),
    }
    done = subprocess.run(
        [sys.executable, str(code / "train.py"), "--max_depth", "2"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "output" / "data" / "metrics.json").read_text())
    assert metrics["metrics"]["roc_auc"] > 0.7 and metrics["info"]["n_test"] == 100
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"model.json", "feature_columns.json"}

    env["SM_HPS"] = json.dumps({"target_column": "nope"})
    failed = subprocess.run([sys.executable, str(code / "train.py")], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert failed.returncode == 1
    reason = (tmp_path / "output" / "failure").read_text().strip()
    assert reason.startswith("target column 'nope' not found in train data")
    assert failed.stderr.strip().splitlines()[-1] == f"ERROR: {reason}"
