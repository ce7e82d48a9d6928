"""The one cost model: compute seconds x instances x an hourly price.

Every number the package reports as money comes from :func:`estimate_cost`, for training runs today and
for the teardown sweep later, so runs and sweeps can never disagree about what an hour costs.
Prices are on-demand list prices in USD per instance-hour (us-east-1, late 2026); override them per
pipeline with ``training.resources.hourly_price_usd`` (e.g. an internal chargeback rate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# backend -> instance type -> USD per instance-hour.
PRICE_TABLE: dict[str, dict[str, float]] = {
    # Local runs cost nothing by default; set hourly_price_usd to charge for the machine.
    "local": {"local": 0.0},
    "sagemaker": {
        "ml.m5.xlarge": 0.23,
        "ml.m5.2xlarge": 0.461,
        "ml.g4dn.xlarge": 0.736,
        "ml.g4dn.2xlarge": 0.94,
        "ml.g5.xlarge": 1.408,
        "ml.g5.2xlarge": 1.515,
        "ml.g6.xlarge": 1.1672,
        "ml.p3.2xlarge": 3.825,
        "ml.p4d.24xlarge": 37.688,
    },
    "vertex": {
        "n1-standard-4": 0.2185,
        "n1-standard-4+nvidia-tesla-t4": 0.6210,
        "g2-standard-8+nvidia-l4": 1.0358,
        "a2-highgpu-1g": 4.2245,
    },
}


class UnknownPriceError(KeyError):
    """No price for a backend/instance type and no override: say so instead of guessing zero."""


@dataclass(frozen=True)
class CostEstimate:
    backend: str
    instance_type: str
    instance_count: int
    seconds: float
    hourly_price_usd: float
    usd: float
    price_source: str  # "table" or "override"

    def to_dict(self) -> dict:
        return asdict(self)


def hourly_price(backend: str, instance_type: str, override: float | None = None) -> tuple[float, str]:
    if override is not None:
        return float(override), "override"
    try:
        return PRICE_TABLE[backend][instance_type], "table"
    except KeyError:
        raise UnknownPriceError(
            f"no price for {backend} instance type {instance_type!r}; add it to "
            f"airflow_retrain.cost.PRICE_TABLE or set training.resources.hourly_price_usd"
        ) from None


def estimate_cost(
    backend: str,
    instance_type: str,
    seconds: float,
    instance_count: int = 1,
    hourly_price_usd: float | None = None,
) -> CostEstimate:
    """Cost of ``seconds`` of billable time on ``instance_count`` instances."""
    price, source = hourly_price(backend, instance_type, hourly_price_usd)
    seconds = max(0.0, float(seconds))
    usd = round(seconds / 3600.0 * instance_count * price, 6)
    return CostEstimate(backend, instance_type, instance_count, round(seconds, 3), price, usd, source)


# backend -> instance type -> GPUs per instance, for the ledger's GPU-hours (an unknown type counts 0).
GPUS_PER_INSTANCE: dict[str, dict[str, int]] = {
    "sagemaker": {
        "ml.g4dn.xlarge": 1,
        "ml.g4dn.2xlarge": 1,
        "ml.g4dn.12xlarge": 4,
        "ml.g5.xlarge": 1,
        "ml.g5.2xlarge": 1,
        "ml.g5.12xlarge": 4,
        "ml.g5.48xlarge": 8,
        "ml.g6.xlarge": 1,
        "ml.p3.2xlarge": 1,
        "ml.p3.8xlarge": 4,
        "ml.p3.16xlarge": 8,
        "ml.p4d.24xlarge": 8,
    },
    "vertex": {
        "n1-standard-4+nvidia-tesla-t4": 1,
        "g2-standard-8+nvidia-l4": 1,
        "a2-highgpu-1g": 1,
    },
}


def gpus_per_instance(backend: str, instance_type: str | None) -> int:
    """GPUs on one instance of ``instance_type`` (0 when unknown or CPU-only)."""
    return GPUS_PER_INSTANCE.get(backend, {}).get(instance_type or "", 0)
