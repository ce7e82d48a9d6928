"""The SageMaker training-container contract, built in one place: layout, config files and environment.

A SageMaker training host sees ``/opt/ml``: ``input/config/{hyperparameters,inputdataconfig,resourceconfig}.json``,
``input/data/<channel>``, ``model``, ``output/data``, ``output/failure`` and ``checkpoints``, and the training
toolkit's variables (``SM_CHANNEL_<NAME>``, ``SM_HPS``, ``SM_HOSTS``, ``SM_CURRENT_HOST`` ...). The local
backend (``local.py`` and ``local_runner.py``) and the fake clouds (``scripts/fake_cloud``, ``scripts/fake_vertex.py``)
all build a container from here, so a script that trains under one trains under the others.

Standard library only and no package imports: ``local_runner.py`` loads this file by path in a training
interpreter without Airflow, and the training script's contract module (``include/training/churn/contract.py``)
reads what this writes without importing it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The folders of a container root (``/opt/ml`` on SageMaker).
LAYOUT = ("input/config", "input/data", "model", "output/data", "checkpoints")
#: The name of SageMaker's one instance group when a job does not define heterogeneous groups.
INSTANCE_GROUP = "homogeneousCluster"
#: The loopback stand-in for SageMaker's host-name resolution: where the first host's collective tracker
#: listens (the contract module reads these; on SageMaker ``algo-1`` resolves by name instead).
TRACKER_HOST_VAR, TRACKER_PORT_VAR = "RETRAIN_TRACKER_HOST", "RETRAIN_TRACKER_PORT"


def host_names(count: int) -> list[str]:
    """SageMaker's host names for ``count`` instances: ``algo-1`` .. ``algo-N``."""
    return [f"algo-{i + 1}" for i in range(max(1, int(count)))]


def make_layout(root: Path) -> Path:
    """Create the folders of a container root; return it."""
    for sub in LAYOUT:
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def resource_config(hosts: Sequence[str], current_host: str, instance_type: str = "") -> dict[str, Any]:
    """``resourceconfig.json`` as SageMaker writes it on ``current_host``."""
    return {
        "current_host": current_host,
        "current_instance_type": instance_type,
        "current_group_name": INSTANCE_GROUP,
        "hosts": list(hosts),
        "instance_groups": [
            {"instance_group_name": INSTANCE_GROUP, "instance_type": instance_type, "hosts": list(hosts)}
        ],
        "network_interface_name": "eth0",
    }


def input_data_config(channels: Sequence[Mapping[str, Any]] | Sequence[str]) -> dict[str, dict[str, str]]:
    """``inputdataconfig.json`` from SageMaker ``InputDataConfig`` entries (or bare channel names)."""
    config = {}
    for channel in channels:
        if isinstance(channel, str):
            channel = {"ChannelName": channel}
        source = (channel.get("DataSource") or {}).get("S3DataSource") or {}
        config[channel["ChannelName"]] = {
            "TrainingInputMode": channel.get("InputMode") or "File",
            "S3DistributionType": source.get("S3DistributionType", "FullyReplicated"),
            "RecordWrapperType": channel.get("RecordWrapperType", "None"),
        }
    return config


def decode_hyperparameter(value: Any) -> Any:
    """SageMaker's framework convention: hyperparameter values are JSON-encoded strings."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def hyperparameter_args(hyperparameters: Mapping[str, Any]) -> list[str]:
    """The ``--key value`` arguments the training toolkit passes to the entry point."""
    args: list[str] = []
    for key, value in hyperparameters.items():
        args += [f"--{key}", _text(value)]
    return args


def write_config(
    root: Path,
    hyperparameters: Mapping[str, Any],
    data_config: Mapping[str, Any],
    resource: Mapping[str, Any],
) -> None:
    """Write ``input/config/{hyperparameters,inputdataconfig,resourceconfig}.json`` under ``root``."""
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    for name, data in (
        ("hyperparameters.json", hyperparameters),
        ("inputdataconfig.json", data_config),
        ("resourceconfig.json", resource),
    ):
        (config / name).write_text(json.dumps(dict(data), indent=2))


def environment(
    root: Path,
    *,
    job_name: str,
    hosts: Sequence[str],
    current_host: str,
    channels: Mapping[str, Path | str],
    hyperparameters: Mapping[str, Any],
    instance_type: str = "",
    num_gpus: int = 0,
    data_config: Mapping[str, Any] | None = None,
    tracker: tuple[str, int] | None = None,
) -> dict[str, str]:
    """The training toolkit's variables for one host whose container root is ``root``.

    :param channels: channel name -> local folder, in the order ``SM_CHANNELS`` lists them.
    :param hyperparameters: the user's hyperparameters, decoded (no ``sagemaker_*`` keys).
    :param tracker: ``(host, port)`` of the collective tracker on loopback, for jobs of several hosts
        whose host names do not resolve (the local backend, the fake cloud).
    """
    data_config = input_data_config(list(channels)) if data_config is None else data_config
    env = {
        "SM_TRAINING_JOB_NAME": job_name,
        "TRAINING_JOB_NAME": job_name,
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DIR": str(root / "output"),
        "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
        "SM_OUTPUT_FAILURE": str(root / "output" / "failure"),
        "SM_INPUT_DIR": str(root / "input"),
        "SM_INPUT_CONFIG_DIR": str(root / "input" / "config"),
        "SM_INPUT_DATA_CONFIG": json.dumps(dict(data_config)),
        "SM_CHECKPOINT_DIR": str(root / "checkpoints"),
        "SM_CHANNELS": json.dumps(list(channels)),
        "SM_HPS": json.dumps(dict(hyperparameters)),
        "SM_NUM_GPUS": str(num_gpus),
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "PYTHONUNBUFFERED": "1",
    }
    for name, folder in channels.items():
        env[f"SM_CHANNEL_{name.upper()}"] = str(folder)
    for key, value in hyperparameters.items():
        env[f"SM_HP_{key.upper()}"] = _text(value)
    return host_environment(env, hosts=hosts, current_host=current_host, instance_type=instance_type, tracker=tracker)


def host_environment(
    env: Mapping[str, str],
    *,
    hosts: Sequence[str],
    current_host: str,
    instance_type: str = "",
    tracker: tuple[str, int] | None = None,
    config_dir: Path | None = None,
) -> dict[str, str]:
    """``env`` as the host ``current_host`` of ``hosts`` sees it (``SM_HOSTS``, ``SM_CURRENT_HOST``,
    ``SM_RESOURCE_CONFIG``, the loopback tracker); with ``config_dir`` that host's own config folder gets
    its ``resourceconfig.json`` and ``SM_INPUT_CONFIG_DIR`` points there."""
    resource = resource_config(hosts, current_host, instance_type)
    env = {
        **env,
        "SM_HOSTS": json.dumps(list(hosts)),
        "SM_CURRENT_HOST": current_host,
        "SM_CURRENT_INSTANCE_TYPE": instance_type,
        "SM_RESOURCE_CONFIG": json.dumps(resource),
    }
    if tracker is not None and len(hosts) > 1:
        env[TRACKER_HOST_VAR], env[TRACKER_PORT_VAR] = tracker[0], str(tracker[1])
    if config_dir is not None:
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "resourceconfig.json").write_text(json.dumps(resource, indent=2))
        env["SM_INPUT_CONFIG_DIR"] = str(config_dir)
    return env


def gpu_count() -> int:
    """GPUs this host's ``nvidia-smi`` can see (0 without a driver): a container run here gets ``SM_NUM_GPUS``
    from it, and the training script picks the device itself."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def free_port() -> int:
    """A free TCP port on loopback (for the tracker of a job of several hosts)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
