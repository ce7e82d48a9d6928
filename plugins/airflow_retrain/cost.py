"""The one cost model: billable seconds x instances x an hourly price from a versioned table.

Every number the package reports as money comes from here -- training runs, the budget check before a
launch (``training.max_cost_usd``), teardown and the sweep -- so they can never disagree about what an
hour costs.

Prices are list prices in USD per instance-hour, keyed by backend, region and instance type, with an
on-demand and a spot column. They live in one data file shipped with the package,
``airflow_retrain/data/prices.json`` (:mod:`airflow_retrain.price_table`; its ``version`` says when they
were taken, ``make refresh-prices`` rebuilds it from the clouds' pricing APIs); check them against your
bill and override per pipeline with ``training.resources.hourly_price_usd``, e.g. a negotiated or
chargeback rate. A type with an on-demand but no spot price in the table has no price for spot jobs. SageMaker bills managed spot training at the on-demand rate for fewer seconds: its
``BillableTimeInSeconds`` already carries the discount, so its spot column equals on-demand and the
savings come from ``TrainingTimeInSeconds - BillableTimeInSeconds``. Vertex AI bills Spot VMs at a lower
rate for the same seconds. One formula covers both::

    usd            = billable_seconds / 3600 x instances x (spot rate if spot else on-demand rate)
    on_demand_usd  = training_seconds / 3600 x instances x on-demand rate
    spot_savings   = on_demand_usd - usd

An instance is one replica with all of its GPUs: a Vertex replica of ``n1-standard-4`` with four T4s
(instance type ``n1-standard-4+4xnvidia-tesla-t4``, see
:func:`airflow_retrain.training.vertex_catalog.price_key`) costs the machine plus four times the T4's
hourly price (the region's ``accelerators``); a SageMaker instance type's price already covers its GPUs.
GPUs per instance come from the backends' catalogs (:func:`gpus_per_instance`), so GPU-hours scale with
GPUs x instances too.

An unknown price never fails a finished job: :func:`job_cost` reports the cost as unknown (``usd`` is
``None``) with a warning; the spec check flags the instance type at load time instead.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_retrain.price_table import PriceTable, RegionPrices

log = logging.getLogger(__name__)

#: How the table is named in messages (airflow_retrain.price_table.PRICES_FILE, relative to the package).
PRICE_FILE_NAME = "airflow_retrain/data/prices.json"


def price_table() -> PriceTable:
    """The price table in use (imported on first use: pydantic stays out of this module's import)."""
    from airflow_retrain.price_table import price_table as table

    return table()


def price_table_version() -> str:
    """The loaded table's ``version`` (when its prices were taken), recorded with every estimate."""
    return price_table().version


def __getattr__(name: str) -> object:
    """The table's older dict views, built from the data file on access (nothing is read at import).

    ``PRICE_TABLE_VERSION``; ``PRICES`` and ``ACCELERATOR_PRICES`` (backend -> region -> type ->
    ``(on-demand, spot)``, spot ``None`` where unknown); ``PRICE_TABLE`` (backend -> type -> on-demand
    price in the default region); ``DEFAULT_REGIONS`` (backend -> region).
    """
    table = price_table()
    if name == "PRICE_TABLE_VERSION":
        return table.version
    if name == "DEFAULT_REGIONS":
        return {cloud: prices.default_region for cloud, prices in table.clouds.items()}
    if name in ("PRICES", "ACCELERATOR_PRICES"):
        column = "machines" if name == "PRICES" else "accelerators"
        return {
            cloud: {
                region: {key: (p.on_demand, p.spot) for key, p in getattr(entries, column).items()}
                for region, entries in prices.regions.items()
            }
            for cloud, prices in table.clouds.items()
        }
    if name == "PRICE_TABLE":
        return {
            cloud: {key: p.on_demand for key, p in prices.regions[prices.default_region].machines.items()}
            for cloud, prices in table.clouds.items()
        }
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    price_table_version: str = field(default_factory=price_table_version)
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
    if region:
        return region
    cloud = price_table().clouds.get(backend)
    return cloud.default_region if cloud else ""


def hourly_prices(
    backend: str, instance_type: str, override: float | None = None, region: str | None = None
) -> tuple[float, float | None, str]:
    """``(on-demand, spot, source)`` USD per instance-hour; an override is used for both columns.

    ``spot`` is ``None`` where the table has an on-demand price but no spot price for the type.
    """
    if override is not None:
        return float(override), float(override), "override"
    where = _region(backend, region)
    cloud = price_table().clouds.get(backend)
    prices = cloud.regions.get(where) if cloud else None
    if prices is not None and instance_type in prices.machines:
        price = prices.machines[instance_type]
        return price.on_demand, price.spot, "table"
    if backend == "vertex" and prices is not None and (attached := _attached_gpu_prices(instance_type, prices)):
        return attached[0], attached[1], "table"
    raise UnknownPriceError(
        f"no price for {backend} instance type {instance_type!r} in region {where!r} (price table "
        f"{price_table().version}, {PRICE_FILE_NAME}); add it there (make refresh-prices) or set "
        f"training.resources.hourly_price_usd"
    )


def _attached_gpu_prices(instance_type: str, prices: RegionPrices) -> tuple[float, float | None] | None:
    """Machine price + count x GPU price of a Vertex ``machine+[Nx]accelerator`` key; None if a part is unpriced."""
    from airflow_retrain.training.vertex_catalog import UnknownMachineError, parse_price_key

    try:
        machine, accelerator, count = parse_price_key(instance_type)
    except UnknownMachineError:
        return None
    machines, gpus = prices.machines, prices.accelerators
    if accelerator is None or machine not in machines or accelerator not in gpus:
        return None
    m, g = machines[machine], gpus[accelerator]
    # rounded: the sum of two decimal prices must not grow float noise (0.2185 + 0.4025 = 0.621, not ...01)
    on_demand = round(m.on_demand + count * g.on_demand, 6)
    spot = None if m.spot is None or g.spot is None else round(m.spot + count * g.spot, 6)
    return on_demand, spot


def _paid_price(
    backend: str, instance_type: str, region: str | None, on_demand: float, spot_price: float | None, spot: bool
) -> float:
    """The rate a job pays; a spot job on a type with no spot price in the table has no price."""
    if not spot:
        return on_demand
    if spot_price is None:
        raise UnknownPriceError(
            f"no spot price for {backend} instance type {instance_type!r} in region "
            f"{_region(backend, region)!r} (price table {price_table().version}, {PRICE_FILE_NAME}; "
            f"on-demand ${on_demand}/h); add it there (make refresh-prices) or set "
            f"training.resources.hourly_price_usd"
        )
    return spot_price


def hourly_price(
    backend: str,
    instance_type: str,
    override: float | None = None,
    region: str | None = None,
    spot: bool = False,
) -> tuple[float, str]:
    """The hourly price a job pays and where it came from (``table`` or ``override``)."""
    on_demand, spot_price, source = hourly_prices(backend, instance_type, override, region)
    return _paid_price(backend, instance_type, region, on_demand, spot_price, spot), source


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
    unknown_price_ok: bool = False,
) -> CostEstimate:
    """Cost of ``seconds`` of billable time on ``instance_count`` instances; raises on unknown prices.

    :param training_seconds: seconds the job trained, when they differ from the billable ones
        (SageMaker managed spot); the on-demand comparison and spot savings are computed from them.
    :param unknown_price_ok: an unknown price gives ``usd=None`` and a warning instead of the error (see
        :func:`job_cost`).
    """
    try:
        on_demand, spot_price, source = hourly_prices(backend, instance_type, hourly_price_usd, region)
        price = _paid_price(backend, instance_type, region, on_demand, spot_price, spot)
    except UnknownPriceError as e:
        if not unknown_price_ok:
            raise
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


#: :func:`estimate_cost` for jobs that already ran: an unknown price gives ``usd=None`` and a warning, never an
#: error, so their result is not lost to a missing table row.
job_cost = functools.partial(estimate_cost, unknown_price_ok=True)


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
