"""Training inputs as fingerprints: skip a retrain whose inputs equal the champion's.

A run's training inputs are the exported data (the export's content fingerprint), the training code (the
entry point's folder, the files a remote backend ships), the resolved hyperparameters and the training
config (backend, machine, backend settings, the dataset's shape in the spec). ``register`` records each
part and their combined fingerprint as tags on the new version; ``train`` compares the next run's with the
tags of the version ``champion`` points at (one registry read, no cloud call) and skips when all are equal,
unless the run's ``force`` Param is true.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_retrain.registry.tags import CHAMPION, TAG, MlflowHook

if TYPE_CHECKING:
    from airflow_retrain.spec.models import PipelineSpec

INPUTS_TAG = f"{TAG}.inputs"
#: the parts, in the order a message names them; ``data`` is also the version's ``retrain.data.fingerprint``
PARTS = ("data", "code", "hyperparameters", "config")
# What a remote backend leaves out of the entry point's folder (training.remote.SOURCE_SKIP), and .pyc.
_SOURCE_SKIP = frozenset({"__pycache__", ".ipynb_checkpoints", ".git"})


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_fingerprint(entry_point: str | Path) -> str:
    """The entry point's folder as shipped to a job: each file's relative path and content."""
    folder = Path(entry_point).parent
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if _SOURCE_SKIP.intersection(rel.parts) or path.suffix == ".pyc" or not path.is_file():
            continue
        try:
            content = path.read_bytes()
        except FileNotFoundError:  # removed while we walked: not part of what ships
            continue
        digest.update(rel.as_posix().encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()[:16]


def training_inputs(*, data: str | None, entry_point: str | Path, hyperparameters: dict[str, Any],
                    config: dict[str, Any]) -> dict[str, str]:
    """Each part's fingerprint and their combination (``fingerprint``)."""
    parts = {
        "data": str(data),
        "code": code_fingerprint(entry_point),
        "hyperparameters": _digest(hyperparameters),
        "config": _digest(config),
    }
    return {**parts, "fingerprint": _digest(parts)}


def version_tags(inputs: dict[str, str]) -> dict[str, str]:
    """The tags ``register`` writes: ``retrain.inputs.fingerprint`` and one per part but the data (already
    ``retrain.data.fingerprint``)."""
    return {f"{INPUTS_TAG}.{k}": v for k, v in inputs.items() if k != "data"}


def unchanged_since_champion(hook: MlflowHook, model_name: str, inputs: dict[str, str],
                             force_param: str) -> tuple[str | None, str]:
    """``(reason to skip, what was found)``: a reason when the champion's recorded inputs equal ``inputs``.

    No champion, or a champion registered before inputs were recorded, always trains.
    """
    champion = hook.get_version_by_alias(model_name, CHAMPION)
    if champion is None:
        return None, f"{model_name} has no champion yet: training"
    tags = champion.tags or {}
    recorded = tags.get(f"{INPUTS_TAG}.fingerprint")
    if recorded is None:
        return None, f"champion v{champion.version} has no recorded inputs ({INPUTS_TAG}.fingerprint): training"
    if recorded != inputs["fingerprint"]:
        theirs = {"data": tags.get(f"{TAG}.data.fingerprint"),
                  **{p: tags.get(f"{INPUTS_TAG}.{p}") for p in PARTS if p != "data"}}
        changed = [p for p in PARTS if theirs.get(p) != inputs[p]] or ["inputs"]
        return None, f"{', '.join(changed)} changed since champion v{champion.version}: training"
    return (
        f"inputs unchanged since champion v{champion.version} (data fingerprint {inputs['data']}, code "
        f"{inputs['code']}, hyperparameters {inputs['hyperparameters']}, config {inputs['config']}): nothing to "
        f"train; trigger with {force_param}=true to retrain anyway"
    ), "unchanged"


def skip_unchanged(spec: PipelineSpec, force_param: str) -> dict[str, Any]:
    """``TrainModelOperator(skip_unchanged=...)`` of a spec: where the champion is, the Param that forces
    training, and the spec's settings that shape the data training reads (part of the config)."""
    return {
        "model_name": spec.registry.model_name,
        "mlflow_conn_id": spec.registry.connection_id,
        "force_param": force_param,
        "config": {
            "feature_table": spec.dataset.feature_table,
            "holdout_fraction": spec.dataset.holdout_fraction,
        },
    }


def skip_reason(settings: dict[str, Any], params: dict[str, Any] | None, inputs: Callable[[], dict[str, str]],
                hook: Callable[[], MlflowHook], log: logging.Logger) -> str | None:
    """Why ``train`` skips under ``settings`` (see :func:`skip_unchanged`), or ``None``: it trains. Logs
    either way; ``inputs`` and ``hook`` are called only when the run's force Param is not true."""
    force = settings.get("force_param") or "force"
    if (params or {}).get(force):
        log.info("Param %r is true: training whatever the champion was trained on", force)
        return None
    reason, found = unchanged_since_champion(hook(), settings["model_name"], inputs(), force)
    log.info("%s", reason or found)
    return reason
