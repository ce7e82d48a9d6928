"""The training-container contract, apart from the model: where inputs are, where outputs go, how to fail.

Ships beside ``train.py`` (the whole folder is packed as ``sourcedir.tar.gz`` for SageMaker) and is
imported by it as ``contract``. Standard library only, and nothing from Airflow or ``airflow_retrain``:
it must run unchanged in a SageMaker framework container, a custom image or the local backend's
subprocess. Copy it unchanged next to a new model's script; the script keeps only the model code.

What it covers (SageMaker training-toolkit conventions):

* :class:`TrainingEnvironment` -- channels (``SM_CHANNELS``/``SM_CHANNEL_<NAME>``), ``SM_MODEL_DIR``,
  ``SM_OUTPUT_DATA_DIR``, the failure file (``SM_OUTPUT_FAILURE``, default ``/opt/ml/output/failure``),
  the checkpoint folder (``/opt/ml/checkpoints``), hosts and GPU count, built by
  :meth:`TrainingEnvironment.from_environ`;
* hyperparameters: ``SM_HPS`` (or ``hyperparameters.json`` in ``SM_INPUT_CONFIG_DIR``) merged with
  ``--key value`` arguments, coerced to the types of a dataclass the script defines
  (:func:`resolve_hyperparameters`);
* outputs: :func:`write_json` (atomic, strict JSON) and :func:`write_metrics` (``metrics.json``);
* failure: :func:`run_main` turns a :class:`TrainingError` (or any crash) into exit status 1, a last
  ``ERROR: <reason>`` line on stderr and the failure file, which SageMaker reports as ``FailureReason``;
* device: :func:`gpu_visible` and :func:`choose_device` (the framework-specific probe is the script's).

Vertex AI's ``AIP_*`` variables and ``CLUSTER_SPEC`` are read by :meth:`TrainingEnvironment._from_vertex`
(``gs://`` URIs through the ``/gcs/`` mount), chosen by :meth:`TrainingEnvironment.from_environ`
(``platform`` tells them apart); multi-host training reads :attr:`TrainingEnvironment.hosts`,
:attr:`~TrainingEnvironment.rank` and :meth:`~TrainingEnvironment.tracker_address`; spot/resumable
training reads and writes :attr:`TrainingEnvironment.checkpoint_dir`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import traceback
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_CHANNELS_ROOT = "/opt/ml/input/data"
DEFAULT_INPUT_CONFIG_DIR = "/opt/ml/input/config"
DEFAULT_MODEL_DIR = "/opt/ml/model"
DEFAULT_OUTPUT_DATA_DIR = "/opt/ml/output/data"
DEFAULT_FAILURE_FILE = "/opt/ml/output/failure"
DEFAULT_CHECKPOINT_DIR = "/opt/ml/checkpoints"  # SageMaker CheckpointConfig.LocalPath default
DEFAULT_TRACKER_PORT = 9099  # the first host's collective tracker (SageMaker opens all ports between hosts)
DEFAULT_GCS_MOUNT = "/gcs"  # Vertex AI mounts every bucket the job may read at /gcs/<bucket>/
#: Vertex AI's own data variables (managed datasets) and the channel they are read as.
VERTEX_DATA_CHANNELS = {
    "AIP_TRAINING_DATA_URI": "train",
    "AIP_VALIDATION_DATA_URI": "validation",
    "AIP_TEST_DATA_URI": "test",
}
MAX_REASON_CHARS = 1000  # SageMaker truncates FailureReason at 1024 characters
DEVICES = ("auto", "cpu", "cuda")


class TrainingError(Exception):
    """An expected failure; its message is the one-line reason reported to the caller."""


def log(message: str) -> None:
    print(message, flush=True)


def warn(message: str) -> None:
    print(f"WARNING: {message}", flush=True)


def preview(items: list[str], limit: int = 8) -> str:
    """``'a', 'b', ... (12 in all)``: a short list for error messages."""
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


# --------------------------------------------------------------------------- environment


def _json_env(environ: Mapping[str, str], name: str, default: Any) -> Any:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise TrainingError(f"{name} is not valid JSON: {exc}") from None


@dataclasses.dataclass(frozen=True)
class TrainingEnvironment:
    """Where this training job reads and writes, as the platform told it through the environment.

    :param platform: ``sagemaker`` (also what the local backend emulates); ``vertex`` is reserved.
    :param channels: channel name -> local folder; the names of ``SM_CHANNELS`` plus every
        ``SM_CHANNEL_<NAME>``, and the ``default_channels`` asked for, at ``/opt/ml/input/data/<name>``.
    :param model_dir: what is saved here becomes the model artifact (``model.tar.gz`` on SageMaker).
    :param output_data_dir: metrics and other outputs (``output.tar.gz`` on SageMaker).
    :param failure_file: one-line failure reason; SageMaker shows it as the job's ``FailureReason``.
    :param input_config_dir: holds ``hyperparameters.json`` when ``SM_HPS`` is not set.
    :param checkpoint_dir: synced to the job's checkpoint location by the platform; ``None`` when the
        platform did not provide one (no ``SM_CHECKPOINT_DIR`` and no ``/opt/ml/checkpoints``).
    :param job_name: the training job's name, when the platform sets it.
    :param current_host: this host's name (``algo-1``).
    :param hosts: every host of the job; more than one only in multi-instance training.
    :param num_gpus: GPUs the platform gave the job (``SM_NUM_GPUS``); ``None`` when unknown.
    """

    platform: str
    channels: dict[str, Path]
    model_dir: Path
    output_data_dir: Path
    failure_file: Path
    input_config_dir: Path
    checkpoint_dir: Path | None = None
    job_name: str | None = None
    current_host: str = "algo-1"
    hosts: tuple[str, ...] = ("algo-1",)
    num_gpus: int | None = None

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, default_channels: tuple[str, ...] = ()
    ) -> TrainingEnvironment:
        """Read the environment the platform set (this process's own when ``environ`` is ``None``)."""
        env = os.environ if environ is None else environ
        if not any(k.startswith("SM_") for k in env) and ("AIP_MODEL_DIR" in env or "CLUSTER_SPEC" in env):
            return cls._from_vertex(env, default_channels)
        return cls._from_sagemaker(env, default_channels)

    @classmethod
    def _from_vertex(cls, env: Mapping[str, str], default_channels: tuple[str, ...]) -> TrainingEnvironment:
        """Vertex AI custom jobs: ``gs://`` URIs in ``AIP_*`` variables read through the ``/gcs/`` mount.

        * model: ``AIP_MODEL_DIR``; checkpoints: ``AIP_CHECKPOINT_DIR``;
        * output data (``metrics.json``): ``RETRAIN_OUTPUT_DATA_URI``, else ``output/`` beside the model dir;
        * channels: ``RETRAIN_CHANNEL_<NAME>`` (set by the pipeline's Vertex backend) and Vertex's own
          ``AIP_TRAINING_DATA_URI`` / ``AIP_VALIDATION_DATA_URI`` / ``AIP_TEST_DATA_URI`` (a file pattern
          is read as its folder);
        * hosts: ``CLUSTER_SPEC`` (``{"cluster": {"workerpool0": ["host:port", ...]}, "task": {...}}``).

        ``RETRAIN_GCS_MOUNT`` overrides the mount point (``/gcs``; the fake cloud mounts a local folder).
        """
        mount = (env.get("RETRAIN_GCS_MOUNT") or DEFAULT_GCS_MOUNT).rstrip("/")

        def local(uri: str) -> Path:
            uri = uri.strip()
            if uri.startswith("gs://"):
                return Path(f"{mount}/{uri[len('gs://'):]}".rstrip("/"))
            if uri.startswith(DEFAULT_GCS_MOUNT + "/") and mount != DEFAULT_GCS_MOUNT:
                return Path(mount + uri[len(DEFAULT_GCS_MOUNT) :].rstrip("/"))
            return Path(uri.rstrip("/") or "/")

        channels: dict[str, Path] = {}
        for var, name in VERTEX_DATA_CHANNELS.items():
            if uri := env.get(var):
                path = local(uri)
                channels[name] = path.parent if any(c in path.name for c in "*?[") else path
        for key, value in env.items():
            if key.startswith("RETRAIN_CHANNEL_") and value:
                channels[key[len("RETRAIN_CHANNEL_") :].lower()] = local(value)
        for name in default_channels:
            if name not in channels and (uri := env.get(f"SM_CHANNEL_{name.upper()}")):
                channels[name] = Path(uri)
        model_uri = env.get("AIP_MODEL_DIR")
        if not model_uri:
            raise TrainingError("AIP_MODEL_DIR is unset: the Vertex AI job has no base_output_directory")
        model_dir = local(model_uri)
        output_data_dir = local(env["RETRAIN_OUTPUT_DATA_URI"]) if env.get("RETRAIN_OUTPUT_DATA_URI") else (
            model_dir.parent / "output"
        )
        checkpoint = env.get("AIP_CHECKPOINT_DIR")
        hosts: tuple[str, ...] = ("workerpool0-0",)
        current = "workerpool0-0"
        spec = _json_env(env, "CLUSTER_SPEC", {})
        if isinstance(spec, dict) and isinstance(spec.get("cluster"), dict):
            names = []
            for pool in sorted(spec["cluster"]):
                names += [f"{pool}-{i}" for i in range(len(spec["cluster"][pool] or []))]
            task = spec.get("task") or {}
            hosts = tuple(names) or hosts
            current = f"{task.get('type', 'workerpool0')}-{task.get('index', 0)}"
        return cls(
            platform="vertex",
            channels=channels,
            model_dir=model_dir,
            output_data_dir=output_data_dir,
            failure_file=output_data_dir.parent / "failure",
            input_config_dir=Path(env.get("HOME") or ".") / "input-config",
            checkpoint_dir=local(checkpoint) if checkpoint else None,
            job_name=env.get("CLOUD_ML_JOB_ID") or None,
            current_host=current,
            hosts=hosts,
            num_gpus=None,
        )

    @property
    def rank(self) -> int:
        """This host's index in :attr:`hosts` (0 on the first host, which runs the tracker)."""
        try:
            return self.hosts.index(self.current_host)
        except ValueError:
            raise TrainingError(f"current host {self.current_host!r} is not among the hosts {list(self.hosts)}") from None

    @property
    def world_size(self) -> int:
        return len(self.hosts)

    def tracker_address(self, environ: Mapping[str, str] | None = None) -> tuple[str, int]:
        """Where the first host's collective tracker listens: ``RETRAIN_TRACKER_HOST``/``_PORT`` when set
        (the local backend's loopback emulation), else the first ``CLUSTER_SPEC`` address on Vertex, else
        the first SageMaker host name and port :data:`DEFAULT_TRACKER_PORT`."""
        env = os.environ if environ is None else environ
        host, port = None, None
        if self.platform == "vertex":
            first = self.host_addresses(env)[0]
            if ":" in first:
                host, _, raw = first.rpartition(":")
                port = int(raw)
            else:
                host = first
        host = env.get("RETRAIN_TRACKER_HOST") or host or self.hosts[0]
        raw_port = (env.get("RETRAIN_TRACKER_PORT") or "").strip()
        port = int(raw_port) if raw_port.isdigit() else (port or DEFAULT_TRACKER_PORT)
        return host, port

    def host_addresses(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """``host:port`` of every host, in :attr:`hosts` order, where the platform says (Vertex's
        ``CLUSTER_SPEC``); SageMaker names hosts only (``algo-1``), reachable by name."""
        env = os.environ if environ is None else environ
        spec = _json_env(env, "CLUSTER_SPEC", {})
        if isinstance(spec, dict) and isinstance(spec.get("cluster"), dict):
            return [addr for pool in sorted(spec["cluster"]) for addr in spec["cluster"][pool] or []]
        return list(self.hosts)

    @classmethod
    def _from_sagemaker(cls, env: Mapping[str, str], default_channels: tuple[str, ...]) -> TrainingEnvironment:
        names = list(default_channels)
        for name in _json_env(env, "SM_CHANNELS", []):
            if str(name) not in names:
                names.append(str(name))
        for key in env:
            if key.startswith("SM_CHANNEL_") and key != "SM_CHANNELS":
                name = key[len("SM_CHANNEL_") :].lower()
                if name not in names:
                    names.append(name)
        channels = {
            name: Path(env.get(f"SM_CHANNEL_{name.upper()}") or f"{DEFAULT_CHANNELS_ROOT}/{name}") for name in names
        }
        checkpoint = env.get("SM_CHECKPOINT_DIR")
        if not checkpoint and Path(DEFAULT_CHECKPOINT_DIR).is_dir():
            checkpoint = DEFAULT_CHECKPOINT_DIR
        num_gpus = (env.get("SM_NUM_GPUS") or "").strip()
        hosts = _json_env(env, "SM_HOSTS", ["algo-1"])
        return cls(
            platform="sagemaker",
            channels=channels,
            model_dir=Path(env.get("SM_MODEL_DIR") or DEFAULT_MODEL_DIR),
            output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR") or DEFAULT_OUTPUT_DATA_DIR),
            failure_file=Path(env.get("SM_OUTPUT_FAILURE") or DEFAULT_FAILURE_FILE),
            input_config_dir=Path(env.get("SM_INPUT_CONFIG_DIR") or DEFAULT_INPUT_CONFIG_DIR),
            checkpoint_dir=Path(checkpoint) if checkpoint else None,
            job_name=env.get("SM_TRAINING_JOB_NAME") or env.get("TRAINING_JOB_NAME") or None,
            current_host=env.get("SM_CURRENT_HOST") or "algo-1",
            hosts=tuple(str(h) for h in hosts) or ("algo-1",),
            num_gpus=int(num_gpus) if num_gpus.isdigit() else None,
        )

    def channel(self, name: str) -> Path:
        """The local folder of channel ``name``; a clear error naming the variable when it is absent."""
        try:
            return self.channels[name]
        except KeyError:
            raise TrainingError(
                f"no {name!r} channel (SM_CHANNEL_{name.upper()} is unset; channels: {sorted(self.channels)})"
            ) from None


# --------------------------------------------------------------------------- hyperparameters


def _unquote(text: str) -> str:
    """SageMaker sometimes JSON-encodes string hyperparameters (``'"churned"'``)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            decoded = json.loads(text)
        except ValueError:
            return text
        if isinstance(decoded, str):
            return decoded.strip()
    return text


def coerce(name: str, value: Any, kind: type) -> Any:
    """Convert a hyperparameter (often a string such as ``"6"``) to ``kind`` (str, bool, int or float)."""

    def bad(expected: str) -> TrainingError:
        return TrainingError(f"hyperparameter {name}={value!r} is not {expected}")

    if kind is str:
        if isinstance(value, (dict, list)) or value is None:
            raise bad("a string")
        return _unquote(str(value))
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = _unquote(str(value)).lower()
        if text in ("true", "1", "yes", "y", "on"):
            return True
        if text in ("false", "0", "no", "n", "off"):
            return False
        raise bad("a boolean")
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise bad("a number")
    if isinstance(value, str):
        text = _unquote(value)
        try:
            number: float | int = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise bad("a number") from None
    else:
        number = value
    if isinstance(number, float) and not math.isfinite(number):
        raise bad("a finite number")
    if kind is int:
        if isinstance(number, float):
            if not number.is_integer():
                raise bad("an integer")
            number = int(number)
        return int(number)
    return float(number)


def parse_cli(argv: list[str]) -> dict[str, str]:
    """``--key value`` / ``--key=value`` pairs; hyphens in keys are read as underscores."""
    result: dict[str, str] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            # SageMaker starts bring-your-own containers as `<image> train`; tolerate strays.
            warn(f"ignoring positional command-line argument {token!r}")
            i += 1
            continue
        key = token[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise TrainingError(f"command-line hyperparameter --{key} has no value")
            value = argv[i + 1]
            i += 2
        key = key.strip().replace("-", "_")
        if not key:
            raise TrainingError(f"malformed command-line argument {token!r}")
        result[key] = value
    return result


def load_sm_hps(environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """Hyperparameters from ``SM_HPS``, else ``hyperparameters.json``; returns them and their source."""
    env = os.environ if environ is None else environ
    raw = env.get("SM_HPS")
    source = "SM_HPS"
    if raw is None or not raw.strip():
        hps_file = Path(env.get("SM_INPUT_CONFIG_DIR") or DEFAULT_INPUT_CONFIG_DIR) / "hyperparameters.json"
        if not hps_file.is_file():
            return {}, "defaults"
        try:
            raw = hps_file.read_text()
        except OSError as exc:
            raise TrainingError(f"cannot read {hps_file}: {exc}") from None
        source = str(hps_file)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise TrainingError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TrainingError(f"{source} must be a JSON object, got {type(data).__name__}")
    return data, source


_HP = typing.TypeVar("_HP")


def resolve_hyperparameters(
    cls: type[_HP],
    argv: list[str],
    validate: Callable[[_HP], list[str]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> _HP:
    """Build the script's hyperparameter dataclass from ``SM_HPS`` and the command line (which wins).

    Values are coerced to the dataclass fields' types; keys starting with ``sagemaker_`` (set by
    SageMaker's framework estimators) are ignored quietly, other unknown keys with a warning. Every
    problem (a bad value, or one ``validate`` reports) is raised at once as one :class:`TrainingError`.

    :param cls: a dataclass whose fields (str, bool, int or float) have defaults.
    :param argv: the script's command-line arguments.
    :param validate: returns a list of problems with the resolved values (empty when fine).
    """
    types = typing.get_type_hints(cls)
    fields = {f.name: types[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    from_env, source = load_sm_hps(environ)
    from_cli = parse_cli(argv)
    merged: dict[str, Any] = {**{str(k).replace("-", "_"): v for k, v in from_env.items()}, **from_cli}

    values: dict[str, Any] = {}
    internal: list[str] = []
    errors: list[str] = []
    for key, value in merged.items():
        if key in fields:
            try:
                values[key] = coerce(key, value, fields[key])
            except TrainingError as exc:
                errors.append(str(exc))
        elif key.startswith("sagemaker_"):
            internal.append(key)
        else:
            warn(f"unknown hyperparameter {key!r} ignored")
    if internal:
        log(f"hyperparameters: ignoring SageMaker-internal keys {sorted(internal)}")
    hp = cls(**values)
    problems = errors + (validate(hp) if validate else [])
    if problems:
        raise TrainingError("invalid hyperparameters: " + "; ".join(problems))
    log(
        f"hyperparameters (from {source}{' + command line' if from_cli else ''}): "
        f"{json.dumps(dataclasses.asdict(hp), sort_keys=True)}"  # type: ignore[call-overload]
    )
    return hp


# --------------------------------------------------------------------------- outputs


def write_json(path: Path, payload: Any) -> None:
    """Atomic write, strict JSON (NaN is refused rather than written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def write_metrics(env: TrainingEnvironment, metrics: Mapping[str, float | None], info: Mapping[str, Any]) -> Path:
    """Write ``metrics.json`` (``{"metrics": {...}, "info": {...}}``), the file the pipeline's gates read."""
    path = env.output_data_dir / "metrics.json"
    write_json(path, {"metrics": dict(metrics), "info": dict(info)})
    return path


def write_failure(reason: str, env: TrainingEnvironment | None = None) -> None:
    path = env.failure_file if env else Path(os.environ.get("SM_OUTPUT_FAILURE") or DEFAULT_FAILURE_FILE)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(reason + "\n")
    except OSError:
        pass  # nowhere to write it; stderr and the exit code still carry the reason


def run_main(run: Callable[[list[str]], None], argv: list[str] | None = None) -> int:
    """Run ``run(argv)`` under the failure convention; return the process exit status.

    0 on success. On failure: 1, ``ERROR: <one-line reason>`` as the last stderr line, and the reason in
    the failure file. A :class:`TrainingError`'s message is the reason as is; anything else is reported
    as ``unexpected error: <type>: <message>`` after its traceback.
    """
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        pass
    try:
        run(sys.argv[1:] if argv is None else argv)
        return 0
    except TrainingError as exc:
        reason = str(exc)
    except MemoryError:
        reason = "out of memory"
    except Exception as exc:
        traceback.print_exc()
        reason = f"unexpected error: {type(exc).__name__}: {exc}"
    reason = " ".join(reason.split())[:MAX_REASON_CHARS] or "training failed"
    sys.stdout.flush()
    print(f"ERROR: {reason}", file=sys.stderr, flush=True)
    try:
        env: TrainingEnvironment | None = TrainingEnvironment.from_environ()
    except TrainingError:
        env = None
    write_failure(reason, env)
    return 1


# --------------------------------------------------------------------------- device


def gpu_visible(environ: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """Whether a GPU is visible to this job, and why: ``SM_NUM_GPUS``, ``CUDA_VISIBLE_DEVICES``,
    ``nvidia-smi -L``, then ``/dev/nvidia*``. Says nothing about whether a framework can use it."""
    env = os.environ if environ is None else environ
    num_gpus = (env.get("SM_NUM_GPUS") or "").strip()
    if num_gpus == "0":
        return False, "SM_NUM_GPUS=0"
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return False, f"CUDA_VISIBLE_DEVICES={visible!r} hides all GPUs"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return False, f"nvidia-smi -L failed: {exc}"
        gpus = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
        if out.returncode == 0 and gpus:
            return True, f"nvidia-smi lists {len(gpus)} GPU(s): {gpus[0].strip()}"
        return False, f"nvidia-smi -L lists no GPU (exit {out.returncode})"
    if visible:
        return True, f"CUDA_VISIBLE_DEVICES={visible!r} (no nvidia-smi)"
    if list(Path("/dev").glob("nvidia[0-9]*")):
        return True, "/dev/nvidia* device nodes present (no nvidia-smi)"
    return False, "no nvidia-smi, CUDA_VISIBLE_DEVICES unset and no /dev/nvidia* device"


def choose_device(requested: str, usable_gpu: Callable[[], tuple[bool, str]]) -> str:
    """``cpu`` or ``cuda`` for ``requested`` (``auto``/``cpu``/``cuda``).

    :param usable_gpu: the framework's own check (built with CUDA? does a tiny probe run on the GPU?),
        called only when a GPU is visible; returns whether it works and why.
    :raises TrainingError: ``cuda`` was requested and no usable GPU exists.
    """
    requested = requested.lower()
    if requested == "cpu":
        log("device: cpu (requested)")
        return "cpu"
    present, why = gpu_visible()
    if present:
        works, note = usable_gpu()
        why = f"{why}; {note}"
        present = works
    if requested == "cuda":
        if not present:
            raise TrainingError(f"device=cuda requested but no usable GPU: {why}")
        log(f"device: cuda (requested; {why})")
        return "cuda"
    chosen = "cuda" if present else "cpu"
    log(f"device: {chosen} (auto; {why})")
    return chosen
