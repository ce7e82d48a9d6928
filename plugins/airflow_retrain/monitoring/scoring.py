"""Batch scoring with the champion: the model's files from the registry, the runtime recorded on its version.

The version tag ``retrain.scoring.runtime``
says which runtime scored the holdout faster, measured at registration (:mod:`airflow_retrain.registry.onnx`):
``onnx`` loads the version's ``onnx/model.onnx`` artifact in
ONNX Runtime, anything else (or an ONNX model that cannot be loaded) scores through MLflow pyfunc, and the
result says which one ran and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_retrain.gates._mlflow import LoadedModel, download_version
from airflow_retrain.registry.onnx import ONNX_ARTIFACT, RUNTIME_TAG, onnx_predict_proba

if TYPE_CHECKING:
    import pandas as pd

    from airflow_retrain.hooks.mlflow import MlflowHook


class ScoringInputError(ValueError):
    """The population cannot be scored by the champion; the message names the relation and the columns."""


@dataclass
class Champion:
    """The version ``alias`` points at, loaded for scoring."""

    model_name: str
    version: str
    run_id: str
    features: list[str]
    runtime: str
    runtime_note: str
    _predict: Any

    def predict_proba(self, frame: pd.DataFrame) -> Any:
        return self._predict(frame[self.features])


def input_columns(model: LoadedModel) -> list[str]:
    """The feature columns the model's signature declares, in order."""
    schema = model.pyfunc.metadata.get_input_schema()
    if schema is None:
        raise ScoringInputError(f"model at {model.path} has no input signature: its feature columns are unknown")
    return list(schema.input_names())


def load_champion(hook: MlflowHook, model_name: str, version: Any, workdir: Path) -> Champion:
    """Download and load ``version`` with the runtime recorded on it (pyfunc when that is not ONNX)."""
    model = LoadedModel(download_version(hook, model_name, version.version, workdir / "model"))
    features = input_columns(model)
    wanted = (version.tags or {}).get(RUNTIME_TAG, "pyfunc")
    if wanted == "onnx":
        try:
            session = onnx_session(hook, version.run_id, workdir)
        except Exception as e:  # noqa: BLE001 - any ONNX failure falls back to the model it was exported from
            note = f"ONNX model of v{version.version} could not be loaded ({type(e).__name__}: {e}); scoring with pyfunc"
            return Champion(model_name, str(version.version), version.run_id, features, "pyfunc", note,
                            model.predict_proba)
        return Champion(model_name, str(version.version), version.run_id, features, "onnx",
                        f"ONNX Runtime ({RUNTIME_TAG}=onnx, measured faster at registration)",
                        lambda frame: onnx_predict_proba(session, frame))
    note = f"pyfunc ({RUNTIME_TAG}={wanted})" if RUNTIME_TAG in (version.tags or {}) else "pyfunc (no ONNX export recorded)"
    return Champion(model_name, str(version.version), version.run_id, features, "pyfunc", note, model.predict_proba)


def onnx_session(hook: MlflowHook, run_id: str, workdir: Path):
    """An ONNX Runtime session of the run's ``onnx/model.onnx`` artifact."""
    from airflow_retrain.registry.onnx import session

    local = hook.call(f"download {ONNX_ARTIFACT} of run {run_id}", hook.client.download_artifacts, run_id,
                      ONNX_ARTIFACT, str(workdir))
    return session(local)


def score_population(champion: Champion, frame: pd.DataFrame, relation: str, id_column: str) -> pd.DataFrame:
    """Score every row of ``frame``: ``id`` and ``score``.

    :raises ScoringInputError: the id or a feature column the champion needs is missing.
    """
    import pandas as pd

    missing = [c for c in [id_column, *champion.features] if c not in frame.columns]
    if missing:
        raise ScoringInputError(
            f"{relation}: missing column(s) {', '.join(missing)} that {champion.model_name} v{champion.version} "
            f"needs (it was trained on {len(champion.features)} features)"
        )
    if frame.empty:
        return pd.DataFrame({"id": pd.Series(dtype="str"), "score": pd.Series(dtype="float64")})
    scores = champion.predict_proba(frame)
    return pd.DataFrame({"id": frame[id_column].astype(str).to_numpy(), "score": scores})
