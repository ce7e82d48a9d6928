"""Training backends behind one interface (:class:`~airflow_retrain.training.base.TrainingBackend`).

Kept import-light: the spec validator reads :data:`BACKEND_NAMES` at DAG-parse time, and a backend's
module (boto3, google-cloud-aiplatform later) is imported only when :func:`get_backend` builds it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_retrain.training.base import TrainingBackend

_BACKENDS: dict[str, str] = {
    "local": "airflow_retrain.training.local.LocalTrainingBackend",
    "sagemaker": "airflow_retrain.training.sagemaker.SageMakerTrainingBackend",
    "vertex": "airflow_retrain.training.vertex.VertexTrainingBackend",
}
BACKEND_NAMES: tuple[str, ...] = tuple(_BACKENDS)


def get_backend(name: str, **config: Any) -> TrainingBackend:
    """Build the backend called ``name`` with backend-specific ``config``."""
    try:
        path = _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown training backend {name!r}; known: {', '.join(BACKEND_NAMES)}") from None
    module, _, cls = path.rpartition(".")
    return getattr(import_module(module), cls)(**config)
