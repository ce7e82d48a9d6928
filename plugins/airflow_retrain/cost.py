"""The one cost model: billable seconds x instances x an hourly price from a versioned table.

Every number the package reports as money comes from here -- training runs, the budget check before a
launch (``training.max_cost_usd``), teardown and the sweep -- so they can never disagree about what an
hour costs.

Prices are list prices in USD per instance-hour, keyed by backend, region and instance type, with an
on-demand and a spot column (:data:`PRICE_TABLE_VERSION` says when they were taken; check them against
your bill and override per pipeline with ``training.resources.hourly_price_usd``, e.g. a negotiated or
chargeback rate). SageMaker bills managed spot training at the on-demand rate for fewer seconds: its
``BillableTimeInSeconds`` already carries the discount, so its spot column equals on-demand and the
savings come from ``TrainingTimeInSeconds - BillableTimeInSeconds``. Vertex AI bills Spot VMs at a lower
rate for the same seconds. One formula covers both::

    usd            = billable_seconds / 3600 x instances x (spot rate if spot else on-demand rate)
    on_demand_usd  = training_seconds / 3600 x instances x on-demand rate
    spot_savings   = on_demand_usd - usd

An instance is one replica with all of its GPUs: a Vertex replica of ``n1-standard-4`` with four T4s
(instance type ``n1-standard-4+4xnvidia-tesla-t4``, see
:func:`airflow_retrain.training.vertex_catalog.price_key`) costs the machine plus four times the T4's
hourly price (:data:`ACCELERATOR_PRICES`); a SageMaker instance type's price already covers its GPUs.
GPUs per instance come from the backends' catalogs (:func:`gpus_per_instance`), so GPU-hours scale with
GPUs x instances too.

An unknown price never fails a finished job: :func:`job_cost` reports the cost as unknown (``usd`` is
``None``) with a warning; the spec check flags the instance type at load time instead.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

PRICE_TABLE_VERSION = "2026-11"

# backend -> region -> instance type -> (on-demand, spot) USD per instance-hour.
PRICES: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    # Local runs cost nothing by default; set hourly_price_usd to charge for the machine.
    "local": {"local": {"local": (0.0, 0.0)}},
    # SageMaker training list prices; spot == on-demand on purpose (see the module docstring).
    "sagemaker": {
        "us-east-1": {
            "ml.m5.large": (0.115, 0.115),
            "ml.m5.xlarge": (0.23, 0.23),
            "ml.m5.2xlarge": (0.461, 0.461),
            "ml.c5.xlarge": (0.204, 0.204),
            "ml.g4dn.xlarge": (0.736, 0.736),
            "ml.g4dn.2xlarge": (0.94, 0.94),
            "ml.g5.xlarge": (1.408, 1.408),
            "ml.g5.2xlarge": (1.515, 1.515),
            "ml.g6.xlarge": (1.1672, 1.1672),
            "ml.p3.2xlarge": (3.825, 3.825),
            "ml.p4d.24xlarge": (37.688, 37.688),
        },
        "us-west-2": {
            "ml.m5.large": (0.115, 0.115),
            "ml.m5.xlarge": (0.23, 0.23),
            "ml.m5.2xlarge": (0.461, 0.461),
            "ml.g4dn.xlarge": (0.736, 0.736),
            "ml.g5.xlarge": (1.408, 1.408),
            "ml.g5.2xlarge": (1.515, 1.515),
            "ml.p3.2xlarge": (3.825, 3.825),
        },
        "eu-west-1": {
            "ml.m5.large": (0.128, 0.128),
            "ml.m5.xlarge": (0.256, 0.256),
            "ml.m5.2xlarge": (0.512, 0.512),
            "ml.g4dn.xlarge": (0.822, 0.822),
            "ml.g5.xlarge": (1.571, 1.571),
            "ml.p3.2xlarge": (4.131, 4.131),
        },
    },
    # Vertex: machine types (A2/A3 include their GPUs; G2 keys name their built-in L4s). GPUs attached
    # to N1 machines are priced per GPU in ACCELERATOR_PRICES and added per GPU.
    "vertex": {
        "us-central1": {
            "n1-standard-4": (0.2185, 0.0438),
            "g2-standard-8+nvidia-l4": (1.0358, 0.3107),
            "a2-highgpu-1g": (4.2245, 1.2674),
        },
    },
}

# backend -> region -> accelerator -> (on-demand, spot) USD per GPU-hour, for GPUs attached to a machine.
ACCELERATOR_PRICES: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "vertex": {
        "us-central1": {
            "nvidia-tesla-t4": (0.4025, 0.1425),
        },
    },
}

# The region a price is looked up in when the caller names none.
DEFAULT_REGIONS: dict[str, str] = {"local": "local", "sagemaker": "us-east-1", "vertex": "us-central1"}

# backend -> instance type -> on-demand price in the backend's default region (kept for callers that
# only need "the" price of a type).
PRICE_TABLE: dict[str, dict[str, float]] = {
    backend: {itype: prices[0] for itype, prices in regions[DEFAULT_REGIONS[backend]].items()}
    for backend, regions in PRICES.items()
}


class UnknownPriceError(KeyError):
    """No price for a backend/region/instance type and no override: say so instead of guessing zero."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class CostEstimate:
    """What a job cost (or would cost); ``usd`` is ``None`` when no price is known.

    :param seconds: billable seconds per instance.
    :param training_seconds: seconds the job trained (>= billable with managed spot).
    :param on_demand_usd: what the training seconds would cost on demand.
    :param spot_savings_usd: ``on_demand_usd - usd`` (0 for on-demand jobs).
    :param gpus: GPUs of the whole job (per instance x instances) per the backend's catalog; ``None`` when
        the catalog does not know (local jobs: the worker's GPUs).
    """

    backend: str
    instance_type: str
    instance_count: int
    seconds: float
    hourly_price_usd: float | None
    usd: float | None
    price_source: str  # "table", "override" or "unknown"
    region: str | None = None
    spot: bool = False
    training_seconds: float | None = None
    on_demand_usd: float | None = None
    spot_savings_usd: float | None = None
    price_table_version: str = PRICE_TABLE_VERSION
    gpus: int | None = None

    @property
    def known(self) -> bool:
        return self.usd is not None

    @property
    def gpu_hours(self) -> float | None:
        """GPUs x billable hours; ``None`` when the GPU count is unknown."""
        return None if self.gpus is None else round(self.gpus * self.seconds / 3600.0, 6)

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["gpus"] is None:  # absent, not null: readers (the dashboard) fall back to their own guess
            del data["gpus"]
        return data


def job_gpus(backend: str, instance_type: str, instance_count: int) -> int | None:
    """GPUs of a job: GPUs per instance (from the backend's catalog) x instances; ``None`` when unknown."""
    per_instance = known_gpus_per_instance(backend, instance_type)
    return None if per_instance is None else per_instance * int(instance_count)


def _region(backend: str, region: str | None) -> str:
    return region or DEFAULT_REGIONS.get(backend, "")


def hourly_prices(
    backend: str, instance_type: str, override: float | None = None, region: str | None = None
) -> tuple[float, float, str]:
    """``(on-demand, spot, source)`` USD per instance-hour; an override is used for both columns."""
    if override is not None:
        return float(override), float(override), "override"
    where = _region(backend, region)
    table = PRICES.get(backend, {}).get(where, {})
    if instance_type in table:
        on_demand, spot = table[instance_type]
        return float(on_demand), float(spot), "table"
    if backend == "vertex" and (attached := _attached_gpu_prices(instance_type, where)) is not None:
        return attached[0], attached[1], "table"
    raise UnknownPriceError(
        f"no price for {backend} instance type {instance_type!r} in region {where!r} (price table "
        f"{PRICE_TABLE_VERSION}); add it to airflow_retrain.cost.PRICES or set "
        f"training.resources.hourly_price_usd"
    )


def _attached_gpu_prices(instance_type: str, region: str) -> tuple[float, float] | None:
    """Machine price + count x GPU price of a Vertex ``machine+[Nx]accelerator`` key; None if a part is unpriced."""
    from airflow_retrain.training.vertex_catalog import UnknownMachineError, parse_price_key

    try:
        machine, accelerator, count = parse_price_key(instance_type)
    except UnknownMachineError:
        return None
    machines = PRICES["vertex"].get(region, {})
    gpus = ACCELERATOR_PRICES["vertex"].get(region, {})
    if accelerator is None or machine not in machines or accelerator not in gpus:
        return None
    # rounded: the sum of two decimal prices must not grow float noise (0.2185 + 0.4025 = 0.621, not ...01)
    return tuple(round(m + count * g, 6) for m, g in zip(machines[machine], gpus[accelerator], strict=True))  # type: ignore[return-value]


def hourly_price(
    backend: str,
    instance_type: str,
    override: float | None = None,
    region: str | None = None,
    spot: bool = False,
) -> tuple[float, str]:
    """The hourly price a job pays and where it came from (``table`` or ``override``)."""
    on_demand, spot_price, source = hourly_prices(backend, instance_type, override, region)
    return (spot_price if spot else on_demand), source


def estimate_cost(
    backend: str,
    instance_type: str,
    seconds: float,
    instance_count: int = 1,
    hourly_price_usd: float | None = None,
    *,
    region: str | None = None,
    spot: bool = False,
    training_seconds: float | None = None,
) -> CostEstimate:
    """Cost of ``seconds`` of billable time on ``instance_count`` instances; raises on unknown prices.

    :param training_seconds: seconds the job trained, when they differ from the billable ones
        (SageMaker managed spot); the on-demand comparison and spot savings are computed from them.
    """
    on_demand, spot_price, source = hourly_prices(backend, instance_type, hourly_price_usd, region)
    price = spot_price if spot else on_demand
    seconds = max(0.0, float(seconds))
    trained = max(seconds, float(training_seconds)) if training_seconds is not None else seconds
    usd = round(seconds / 3600.0 * instance_count * price, 6)
    on_demand_usd = round(trained / 3600.0 * instance_count * on_demand, 6)
    return CostEstimate(
        backend=backend,
        instance_type=instance_type,
        instance_count=instance_count,
        seconds=round(seconds, 3),
        hourly_price_usd=price,
        usd=usd,
        price_source=source,
        region=_region(backend, region),
        spot=spot,
        training_seconds=round(trained, 3),
        on_demand_usd=on_demand_usd,
        spot_savings_usd=round(max(0.0, on_demand_usd - usd), 6),
        gpus=job_gpus(backend, instance_type, instance_count),
    )


def job_cost(
    backend: str,
    instance_type: str,
    seconds: float,
    instance_count: int = 1,
    hourly_price_usd: float | None = None,
    *,
    region: str | None = None,
    spot: bool = False,
    training_seconds: float | None = None,
) -> CostEstimate:
    """Like :func:`estimate_cost`, but an unknown price gives ``usd=None`` and a warning, never an error.

    Used for jobs that already ran: their result must not be lost to a missing table row.
    """
    try:
        return estimate_cost(
            backend,
            instance_type,
            seconds,
            instance_count,
            hourly_price_usd,
            region=region,
            spot=spot,
            training_seconds=training_seconds,
        )
    except UnknownPriceError as e:
        log.warning("Cost unknown: %s", e)
        return CostEstimate(
            backend=backend,
            instance_type=instance_type,
            instance_count=instance_count,
            seconds=round(max(0.0, float(seconds)), 3),
            hourly_price_usd=None,
            usd=None,
            price_source="unknown",
            region=_region(backend, region),
            spot=spot,
            training_seconds=None if training_seconds is None else round(float(training_seconds), 3),
            gpus=job_gpus(backend, instance_type, instance_count),
        )


def max_job_cost(
    backend: str,
    instance_type: str,
    instance_count: int,
    max_runtime_seconds: float,
    hourly_price_usd: float | None = None,
    *,
    region: str | None = None,
    spot: bool = False,
) -> CostEstimate:
    """The most a job can cost: price x instances x its max runtime (raises on unknown prices)."""
    return estimate_cost(
        backend, instance_type, max_runtime_seconds, instance_count, hourly_price_usd, region=region, spot=spot
    )


def known_gpus_per_instance(backend: str, instance_type: str | None) -> int | None:
    """GPUs on one instance of ``instance_type`` per the backend's catalog: 0 for CPU-only types, ``None``
    when the catalog does not know the type (or the backend is local: its GPUs are the worker's).

    The catalogs are import-light data modules (no package imports), so the cost model may consult them.
    """
    if not instance_type:
        return None
    if backend == "sagemaker":
        from airflow_retrain.training.sagemaker_catalog import gpus_per_instance as sagemaker_gpus

        return sagemaker_gpus(instance_type)
    if backend == "vertex":
        from airflow_retrain.training.vertex_catalog import gpus_per_replica

        return gpus_per_replica(instance_type)
    return None


def gpus_per_instance(backend: str, instance_type: str | None) -> int:
    """GPUs on one instance of ``instance_type``, for GPU-hours (0 when unknown or CPU-only)."""
    return known_gpus_per_instance(backend, instance_type) or 0
