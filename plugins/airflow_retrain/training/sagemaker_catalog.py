"""What SageMaker offers, read without a network call: training instance types and XGBoost images.

Import-light (the spec validator uses it at DAG-parse time): botocore is imported only when the instance
types are first asked for, and only its bundled service model is read.

Instance types come from botocore's SageMaker service model (the ``TrainingInstanceType`` enum), so a
botocore upgrade brings new types with it -- no hand-kept list.

Image URIs: the SageMaker XGBoost *framework* image is published by AWS under one registry account per
region (``<account>.dkr.ecr.<region>.amazonaws.com/sagemaker-xgboost:<version>``). The SageMaker Python
SDK resolves it from ``image_uri_config/xgboost.json``; that SDK is too heavy for this package's runtime
(measured in docs/sagemaker.md: 23 more packages, 85 MB, and pins that conflict with the lock), so the
registry accounts and versions of that file are kept as data, ``data/sagemaker_images.json`` (its
``_source`` names the file they come from), read on first use. A spec can always name its own image
(``training.sagemaker.image``).

GPUs per instance type: botocore's model does not carry them. They live beside the prices in the one
price table (``airflow_retrain/data/prices.json``, ``clouds.sagemaker.gpu_families``: family -> GPU type
and GPUs per size, ``"*"`` for every other size), following the SageMaker Python SDK's
``image_uri_config/instance_gpu_info.json`` (``Count`` per instance type) and AWS's accelerated-computing
instance pages for the families that file predates (g6, g6e, p5e, p5en, p6). ``ml.g4dn.12xlarge`` and
``ml.p3.8xlarge`` have 4 GPUs: GPU-hours are instances x GPUs x hours. :data:`GPUS_PER_INSTANCE` is that
table as ``family -> {size: GPUs}``, read on first access.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

#: The SageMaker XGBoost images of AWS's registries (region -> account, framework versions).
IMAGES_FILE = Path(__file__).resolve().parent.parent / "data" / "sagemaker_images.json"
DEFAULT_XGBOOST_VERSION = "1.7-1"


# Families with accelerators that are not GPUs (AWS Trainium/Inferentia: no CUDA for the training script).
NON_GPU_ACCELERATOR_FAMILIES = ("trn", "inf")


def _gpu_families() -> dict:
    """The price table's SageMaker ``gpu_families`` (imported here: the catalog stays import-light)."""
    from airflow_retrain.price_table import price_table

    return price_table().clouds["sagemaker"].gpu_families


def __getattr__(name: str) -> object:
    if name == "GPUS_PER_INSTANCE":
        return {family: dict(entry.gpus) for family, entry in _gpu_families().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def gpus_per_instance(instance_type: str) -> int | None:
    """GPUs on one ``ml.*`` training instance: 0 for CPU (and Trainium) types, ``None`` for a GPU family
    (``ml.g*``/``ml.p*``) this catalog has no count for."""
    family, _, size = instance_type.removeprefix("ml.").partition(".")
    families = _gpu_families()
    if family in families:
        sizes = families[family].gpus
        return sizes.get(size, sizes.get("*"))
    if family.startswith(("g", "p")) and not family.startswith(NON_GPU_ACCELERATOR_FAMILIES):
        return None
    return 0


class UnknownImageError(LookupError):
    pass


@lru_cache(maxsize=1)
def xgboost_images() -> dict[str, Any]:
    """``data/sagemaker_images.json``: ``repository``, ``versions`` and ``registries`` (region -> account)."""
    return json.loads(IMAGES_FILE.read_text())


def xgboost_image_uri(region: str, version: str = DEFAULT_XGBOOST_VERSION) -> str:
    """The SageMaker XGBoost framework image for ``region`` and framework ``version``."""
    images = xgboost_images()
    if version not in images["versions"]:
        raise UnknownImageError(
            f"no SageMaker XGBoost framework version {version!r}; known: {', '.join(images['versions'])}"
        )
    try:
        account = images["registries"][region]
    except KeyError:
        raise UnknownImageError(f"no SageMaker XGBoost image registry known for region {region!r}") from None
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{suffix}/{images['repository']}:{version}"


@lru_cache(maxsize=1)
def training_instance_types() -> frozenset[str]:
    """Every instance type SageMaker training accepts, per botocore's bundled service model."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return frozenset(model.shape_for("TrainingInstanceType").enum)
