"""The gates' side of MLflow: evidence logging, snapshots, data runs and model loading.

Everything goes through one :class:`~airflow_retrain.hooks.mlflow.MlflowHook` (its client and tracking
URI); nothing here sets a process-wide tracking URI.

Where the evidence lives:

- the **data gate** runs before a candidate run exists, so each DAG run gets a *data run* in the
  experiment ``<experiment>/data`` (tags ``retrain.pipeline``, ``retrain.run_key``, ``retrain.gate.data``),
  holding ``gates/data.json``, the ``gate.data.*`` metrics and the train split's snapshot
  ``snapshot/training_stats.json``. The last data run whose gate passed is the "previous run" that the
  schema and the row-count band compare with; it survives the Airflow database.
- the **model gate** copies the data verdict and the snapshot onto the candidate's run and tags the
  version ``retrain.snapshot`` (a ``runs:/`` URI), so a later run finds the champion's snapshot from the
  registry alone; every model verdict lands on the candidate's run as ``gates/<gate>.json`` and
  ``gate.<gate>.*`` metrics.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_retrain.gates.base import Verdict, verdict_metrics

if TYPE_CHECKING:
    from airflow_retrain.hooks.mlflow import MlflowHook

SNAPSHOT_PATH = "snapshot/training_stats.json"
SNAPSHOT_TAG = "retrain.snapshot"
DATA_RUN_TAG = "retrain.data_run_id"


def log_verdict(hook: MlflowHook, run_id: str, verdict: Verdict) -> None:
    """Log a verdict to a run: its metrics in one batch call, and ``gates/<gate>.json``."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in verdict_metrics(verdict).items()]
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        hook.client.log_batch(run_id, metrics=metrics[start : start + 1000])
    hook.log_dict(run_id, verdict.to_dict(), f"gates/{verdict.gate}.json")


def load_run_json(hook: MlflowHook, run_id: str, path: str) -> dict[str, Any] | None:
    """A JSON artifact of a run, or ``None`` when the run has no such artifact."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="retrain-gates-") as tmp:
        try:
            local = hook.client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        file = Path(local)
        if not file.is_file():
            return None
        return json.loads(file.read_text())


def _parse_runs_uri(uri: str) -> tuple[str, str] | None:
    if not uri.startswith("runs:/"):
        return None
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    return (run_id, path) if run_id and path else None


def champion_snapshot(hook: MlflowHook, model_name: str, alias: str = "champion") -> tuple[dict | None, str | None]:
    """The training snapshot of the version ``alias`` points at: ``(snapshot, where)``; ``(None, why)``
    when there is no champion or it carries no snapshot."""
    champion = hook.get_version_by_alias(model_name, alias)
    if champion is None:
        return None, f"no {alias} for {model_name}"
    uri = (champion.tags or {}).get(SNAPSHOT_TAG) or f"runs:/{champion.run_id}/{SNAPSHOT_PATH}"
    parsed = _parse_runs_uri(uri)
    snapshot = load_run_json(hook, *parsed) if parsed else None
    where = f"{model_name} v{champion.version} ({uri})"
    if snapshot is None:
        return None, f"{alias} {where} has no training snapshot"
    return snapshot, where


# ------------------------------------------------------------------------------------------ data runs


def data_experiment(experiment: str) -> str:
    return f"{experiment}/data"


def open_data_run(hook: MlflowHook, experiment: str, pipeline: str, dag_id: str, run_key: str) -> str:
    """The data run of this DAG run (reused by a retry), created on first use."""
    exp_id = hook.ensure_experiment(data_experiment(experiment))
    runs = hook.client.search_runs(
        [exp_id], filter_string=f"tags.`retrain.run_key` = '{run_key}'", max_results=1
    )
    if runs:
        return runs[0].info.run_id
    tags = {"retrain.pipeline": pipeline, "retrain.dag_id": dag_id, "retrain.run_key": run_key,
            "retrain.kind": "data"}
    return hook.client.create_run(exp_id, run_name=f"{dag_id}/{run_key}/data", tags=tags).info.run_id


def previous_data_profile(
    hook: MlflowHook, experiment: str, pipeline: str, run_key: str
) -> tuple[dict[str, Any] | None, str | None]:
    """The snapshot of the most recent earlier data run of ``pipeline`` whose data gate passed."""
    exp = hook.client.get_experiment_by_name(data_experiment(experiment))
    if exp is None:
        return None, None
    runs = hook.client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`retrain.pipeline` = '{pipeline}' and tags.`retrain.gate.data` = 'passed'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    for run in runs:
        if run.data.tags.get("retrain.run_key") == run_key:
            continue
        profile = load_run_json(hook, run.info.run_id, SNAPSHOT_PATH)
        if profile is not None:
            return profile, run.info.run_id
    return None, None


def close_data_run(hook: MlflowHook, run_id: str, verdict: Verdict) -> None:
    hook.set_run_tags(run_id, {"retrain.gate.data": "passed" if verdict.passed else "failed"})
    hook.client.set_terminated(run_id, "FINISHED" if verdict.passed else "FAILED")


# ------------------------------------------------------------------------------------------ models


def download_version(hook: MlflowHook, model_name: str, version: str | int, dst: str | Path) -> Path:
    """Download a registered version's model files to ``dst`` (through this hook's URIs)."""
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{model_name}/{version}",
        dst_path=str(dst),
        tracking_uri=hook.tracking_uri,
        registry_uri=hook.tracking_uri,
    )
    return Path(local)


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class LoadedModel:
    """A registered version loaded as it is served (MLflow pyfunc), with a probability scorer.

    :param path: the downloaded model folder.
    """

    def __init__(self, path: Path):
        import mlflow.pyfunc

        self.path = path
        self.pyfunc = mlflow.pyfunc.load_model(str(path))
        try:
            self.raw = self.pyfunc.get_raw_model()
        except Exception:  # noqa: BLE001 - flavors without a raw model score through pyfunc
            self.raw = None

    @property
    def size_bytes(self) -> int:
        return directory_bytes(self.path)

    def predict_proba(self, features) -> Any:
        """Probability of the positive class per row (``predict`` output for models without one)."""
        import numpy as np

        if self.raw is not None and hasattr(self.raw, "predict_proba"):
            proba = np.asarray(self.raw.predict_proba(features))
            return proba[:, 1] if proba.ndim == 2 else proba
        return np.asarray(self.pyfunc.predict(features), dtype="float64").reshape(-1)

    def batch_latency_ms(self, features, rows: int, repeats: int = 5) -> float:
        """Median wall time of one pyfunc ``predict`` over ``rows`` rows (after one warm-up call)."""
        import statistics

        if len(features) == 0:
            raise ValueError("no rows to time scoring on")
        batch = features.sample(n=rows, replace=len(features) < rows, random_state=0).reset_index(drop=True)
        self.pyfunc.predict(batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.pyfunc.predict(batch)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)
