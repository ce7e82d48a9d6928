"""The one SageMaker container builder (``training/container.py``) the local backend and both fakes use: what it
writes is what the churn contract reads, and it needs nothing but the standard library."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from airflow_retrain.training import container

ROOT = Path(__file__).resolve().parents[2]


def _contract():
    spec = importlib.util.spec_from_file_location("churn_contract_c", ROOT / "include" / "training" / "churn" / "contract.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_second_host_of_two_gets_sagemakers_layout_files_and_variables(tmp_path):
    root = container.make_layout(tmp_path / "algo-2")
    hosts = container.host_names(2)
    channels = {"train": root / "input" / "data" / "train", "test": root / "input" / "data" / "test"}
    data_config = container.input_data_config(list(channels))
    container.write_config(root, {"max_depth": "4"}, data_config, container.resource_config(hosts, "algo-2", "ml.m5.xlarge"))
    env = container.environment(
        root, job_name="j-1", hosts=hosts, current_host="algo-2", channels=channels,
        hyperparameters={"max_depth": 4, "label": "churned"}, instance_type="ml.m5.xlarge", tracker=("127.0.0.1", 4321),
    )
    assert sorted(p.name for p in (root / "input" / "config").iterdir()) == [
        "hyperparameters.json", "inputdataconfig.json", "resourceconfig.json",
    ]
    resource = json.loads((root / "input" / "config" / "resourceconfig.json").read_text())
    assert (resource["current_host"], resource["hosts"]) == ("algo-2", ["algo-1", "algo-2"])
    assert json.loads(env["SM_RESOURCE_CONFIG"]) == resource
    assert (env["SM_HOSTS"], env["SM_CURRENT_HOST"]) == ('["algo-1", "algo-2"]', "algo-2")
    assert (env["SM_HP_MAX_DEPTH"], env["SM_HP_LABEL"]) == ("4", "churned")
    assert container.hyperparameter_args({"max_depth": 4, "label": "churned"}) == ["--max_depth", "4", "--label", "churned"]

    # The training script's contract module reads exactly this, with the tracker on loopback.
    training = _contract().TrainingEnvironment.from_environ(env)
    assert (training.rank, training.world_size, training.current_host) == (1, 2, "algo-2")
    assert training.tracker_address(env) == ("127.0.0.1", 4321)
    assert training.channel("train") == channels["train"] and training.model_dir == root / "model"


def test_one_host_has_no_tracker_and_the_module_needs_only_the_standard_library(tmp_path):
    env = container.environment(
        tmp_path, job_name="j", hosts=["algo-1"], current_host="algo-1", channels={}, hyperparameters={},
        tracker=("127.0.0.1", 1),
    )
    assert container.TRACKER_HOST_VAR not in env
    code = (
        "import importlib.util, sys; s = importlib.util.spec_from_file_location('c', sys.argv[1]); "
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('airflow', 'airflow_retrain', 'psutil')))"
    )
    out = subprocess.run([sys.executable, "-c", code, container.__file__], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
