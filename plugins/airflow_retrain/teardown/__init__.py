"""The GPU teardown sweep: inventory per resource kind, a policy, mark-then-act, and the cost ledger.

Kept import-light like :mod:`airflow_retrain.training`: the policy is validated at DAG-parse time, so this
module only names the resource kinds and where their inventories live; boto3 and the Vertex AI client
are imported only when a sweep builds an inventory (:func:`inventory_class`).

A new resource kind is one :class:`~.base.Inventory` subclass
plus one entry in :data:`INVENTORY_CLASSES` and its kinds in :data:`KIND_ACTIONS`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_retrain.teardown.base import Inventory

# Inventory name (a section of the policy) -> its class.
INVENTORY_CLASSES: dict[str, str] = {
    "sagemaker": "airflow_retrain.teardown.sagemaker.SageMakerInventory",
    "vertex": "airflow_retrain.teardown.vertex.VertexInventory",
    "local": "airflow_retrain.teardown.local.LocalInventory",
}

# Resource kind -> the actions the policy may choose for it; the first one is the default.
# "report" only records the finding (it is mark-then-act without the act).
KIND_ACTIONS: dict[str, tuple[str, ...]] = {
    "sagemaker.training_job": ("stop", "report"),
    "sagemaker.processing_job": ("stop", "report"),
    "sagemaker.endpoint": ("delete", "report"),
    "sagemaker.notebook_instance": ("stop", "report"),
    "vertex.custom_job": ("cancel", "report"),
    "vertex.endpoint": ("delete", "report"),
    "local.training_job": ("stop", "report"),
    # A GPU process that belongs to no live job may be someone's notebook kernel: report by default.
    "local.gpu_process": ("report", "kill"),
}


def inventory_class(name: str) -> type[Inventory]:
    """The inventory class registered as ``name`` (imports its client libraries now)."""
    try:
        path = INVENTORY_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown inventory {name!r}; known: {', '.join(INVENTORY_CLASSES)}") from None
    module, _, cls = path.rpartition(".")
    return getattr(import_module(module), cls)
