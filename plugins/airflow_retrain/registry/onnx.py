"""An ONNX copy of a registered candidate, kept only where it reproduces the model and scores faster.

At registration the candidate is converted to ONNX when its flavour converts (XGBoost through
``onnxmltools.convert_xgboost``, opset 15, NaN inputs kept as missing values); ONNX Runtime must reproduce
the model's holdout ``predict_proba`` within :data:`PARITY_TOLERANCE` (max absolute difference). Both
runtimes then score the same holdout rows (repeated up to :data:`MIN_TIMED_ROWS` so that the figure is a
batch's, not one call's overhead), best of :data:`TIMING_REPEATS`, and the version records which was
faster in :data:`RUNTIME_TAG`. Batch scoring (``airflow_retrain.monitoring.scoring``) reads that tag.

The "pyfunc" side is timed as scoring runs it: the flavour's own ``predict_proba`` (MLflow pyfunc hands
scoring the raw XGBoost model). Nothing here may fail a registration: every failure becomes ``pyfunc``
with :data:`NOTE_TAG` saying why.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_retrain.registry.tags import TAG, MlflowHook

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

RUNTIME_TAG = f"{TAG}.scoring.runtime"
NOTE_TAG = f"{TAG}.scoring.onnx_note"
DIFF_TAG = f"{TAG}.scoring.onnx_max_abs_diff"
PYFUNC_RATE_TAG = f"{TAG}.scoring.pyfunc_rows_per_s"
ONNX_RATE_TAG = f"{TAG}.scoring.onnx_rows_per_s"
TIMED_ROWS_TAG = f"{TAG}.scoring.timed_rows"
ONNX_ARTIFACT = "onnx/model.onnx"
PARITY_TOLERANCE = 1e-5
TARGET_OPSET = 15
MIN_TIMED_ROWS = 50_000
TIMING_REPEATS = 3


@dataclass
class ScoringChoice:
    """What registration measured: the runtime to score with, the tags that say so, the ONNX file if kept."""

    runtime: str
    tags: dict[str, str] = field(default_factory=dict)
    onnx_path: Path | None = None


def load_xgboost(model_dir: Path):
    """The trained XGBoost classifier of a training output (``model.json``)."""
    import xgboost

    model = xgboost.XGBClassifier()
    model.load_model(str(model_dir / "model.json"))
    return model


def to_onnx(model: Any, n_features: int) -> bytes:
    """Serialized ONNX of an XGBoost classifier: input ``input`` (float32, ``n_features`` wide), no ZipMap."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    # The converter reads trees by feature index and rejects names other than f0, f1, ...: drop the names
    # on a copy (the caller checked they are the holdout's columns, in order).
    unnamed = copy.deepcopy(model)
    unnamed.get_booster().feature_names = None
    onx = onnxmltools.convert_xgboost(unnamed, initial_types=[("input", FloatTensorType([None, n_features]))],
                                      target_opset=TARGET_OPSET)
    return onx.SerializeToString()


def session(model: bytes | str | Path):
    """An ONNX Runtime CPU session of a serialized model or a ``.onnx`` file."""
    import onnxruntime

    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])


def onnx_predict_proba(sess: Any, frame: pd.DataFrame) -> np.ndarray:
    """Probability of the positive class from an ONNX classifier exported without ZipMap."""
    import numpy as np

    name = sess.get_inputs()[0].name
    outputs = sess.run(None, {name: frame.to_numpy(dtype="float32")})
    proba = np.asarray(outputs[1] if len(outputs) > 1 else outputs[0])
    return proba[:, 1] if proba.ndim == 2 else proba


def native_predict_proba(model: Any, frame: pd.DataFrame) -> np.ndarray:
    import numpy as np

    proba = np.asarray(model.predict_proba(frame))
    return proba[:, 1] if proba.ndim == 2 else proba


def rows_per_second(score: Callable[[pd.DataFrame], Any], frame: pd.DataFrame, repeats: int = TIMING_REPEATS) -> float:
    """Rows scored per second: best of ``repeats`` timed calls after one warm-up call."""
    score(frame)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        score(frame)
        best = min(best, time.perf_counter() - start)
    return len(frame) / max(best, 1e-9)


def timing_batch(holdout: pd.DataFrame, min_rows: int = MIN_TIMED_ROWS) -> pd.DataFrame:
    """The holdout, repeated whole until it has at least ``min_rows`` rows (the same rows for both runtimes)."""
    import pandas as pd

    if len(holdout) >= min_rows or holdout.empty:
        return holdout
    return pd.concat([holdout] * -(-min_rows // len(holdout)), ignore_index=True)


def _pyfunc(note: str, **tags: str) -> ScoringChoice:
    return ScoringChoice("pyfunc", {RUNTIME_TAG: "pyfunc", NOTE_TAG: note[:5000], **tags})


def choose_runtime(flavor: str, model_dir: Path, holdout: pd.DataFrame, workdir: Path) -> ScoringChoice:
    """Export, check parity and time both runtimes; never raises (a failure is ``pyfunc`` with a note).

    :param flavor: MLflow flavour of the model files; only ``xgboost`` converts here.
    :param model_dir: the training output holding the native model.
    :param holdout: the holdout's feature columns (no id, no label).
    :param workdir: where the ``.onnx`` file is written when it is kept.
    """
    if flavor != "xgboost":
        return _pyfunc(f"no ONNX converter for the {flavor} flavour; scoring with pyfunc")
    if holdout.empty:
        return _pyfunc("the holdout is empty: ONNX parity cannot be checked; scoring with pyfunc")
    try:
        model = load_xgboost(model_dir)
        names = model.get_booster().feature_names
        if names and list(names) != list(holdout.columns):
            # Scoring feeds the signature's (the holdout's) column order; the ONNX input is positional.
            return _pyfunc(f"the model's feature order {list(names)} differs from the holdout's "
                           f"{list(holdout.columns)}; scoring with pyfunc")
        frame = holdout
        onnx_bytes = to_onnx(model, frame.shape[1])
        sess = session(onnx_bytes)
    except Exception as e:  # noqa: BLE001 - a model that does not convert is scored as it was trained
        return _pyfunc(f"ONNX export failed ({type(e).__name__}: {str(e).strip()[:500]}); scoring with pyfunc")
    try:
        import numpy as np

        diff = float(np.max(np.abs(native_predict_proba(model, frame) - onnx_predict_proba(sess, frame))))
    except Exception as e:  # noqa: BLE001
        return _pyfunc(f"ONNX Runtime could not score the holdout ({type(e).__name__}: {e}); scoring with pyfunc")
    if not diff <= PARITY_TOLERANCE:  # NaN fails too
        return _pyfunc(f"ONNX Runtime differs from predict_proba by {diff:.3g} on the {len(frame)} holdout rows "
                       f"(limit {PARITY_TOLERANCE:g}); scoring with pyfunc", **{DIFF_TAG: f"{diff:.3g}"})
    batch = timing_batch(frame)
    pyfunc_rate = rows_per_second(lambda f: native_predict_proba(model, f), batch)
    onnx_rate = rows_per_second(lambda f: onnx_predict_proba(sess, f), batch)
    path = workdir / "model.onnx"
    path.write_bytes(onnx_bytes)
    runtime = "onnx" if onnx_rate > pyfunc_rate else "pyfunc"
    return ScoringChoice(runtime, {
        RUNTIME_TAG: runtime,
        DIFF_TAG: f"{diff:.3g}",
        PYFUNC_RATE_TAG: f"{pyfunc_rate:.0f}",
        ONNX_RATE_TAG: f"{onnx_rate:.0f}",
        TIMED_ROWS_TAG: str(len(batch)),
    }, path)


def record_scoring_runtime(hook: MlflowHook, *, model_name: str, version: str, run_id: str, flavor: str,
                           model_dir: Path, holdout: pd.DataFrame, log: Any) -> ScoringChoice:
    """Measure (:func:`choose_runtime`), log ``onnx/model.onnx`` to the candidate's run when it passed parity,
    and tag the version. Never raises: registration must not fail because of ONNX.
    """
    with tempfile.TemporaryDirectory(prefix="retrain-onnx-") as tmp:
        choice = choose_runtime(flavor, model_dir, holdout, Path(tmp))
        if choice.onnx_path is not None:
            try:
                hook.call(f"log {ONNX_ARTIFACT} to run {run_id}", hook.client.log_artifact, run_id,
                          str(choice.onnx_path), artifact_path=str(Path(ONNX_ARTIFACT).parent))
            except Exception as e:  # noqa: BLE001
                choice = _pyfunc(f"the ONNX model could not be logged ({type(e).__name__}: {e}); scoring with "
                                 f"pyfunc", **{k: v for k, v in choice.tags.items() if k != RUNTIME_TAG})
    try:
        hook.set_version_tags(model_name, version, choice.tags)
    except Exception as e:  # noqa: BLE001 - untagged means pyfunc at scoring time: still correct, only slower
        log.warning("Could not tag %s v%s with its scoring runtime (%s); it scores with pyfunc", model_name, version, e)
        return choice
    log.info("Scoring runtime of %s v%s: %s (%s)", model_name, version, choice.runtime,
             choice.tags.get(NOTE_TAG) or f"pyfunc {choice.tags.get(PYFUNC_RATE_TAG)} rows/s, "
             f"ONNX {choice.tags.get(ONNX_RATE_TAG)} rows/s, max abs diff {choice.tags.get(DIFF_TAG)}")
    return choice
