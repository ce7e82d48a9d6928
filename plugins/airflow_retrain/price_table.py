"""The price table: one data file (``data/prices.json``) with every cloud's list prices, read once.

Shape (``schema_version`` 1)::

    {"schema_version": 1, "version": "2026-11", "currency": "USD",
     "clouds": {"<cloud>": {
         "source": "where the prices come from", "retrieved": "YYYY-MM[-DD]", "default_region": "...",
         "spot_is_on_demand": false,          # SageMaker: managed spot bills on-demand rate, fewer seconds
         "gpu_families": {"g5": {"gpu_type": "NVIDIA A10G", "gpus": {"12xlarge": 4, "*": 1}}},
         "machine_types": {"a2-highgpu-1g": {"vcpus": 12, "memory_gb": 85, "gpus": 1, "gpu_type": "..."}},
         "regions": {"<region>": {
             "machines": {"<machine type>": {"on_demand": 0.23, "spot": 0.23}},
             "accelerators": {"<gpu>": {"on_demand": 0.4025, "spot": 0.1425}}}}}}}

Prices are USD per instance-hour (accelerators: per GPU-hour). ``spot`` may be absent where no spot list
price is known; a spot job on such a type then has no table price. ``scripts/refresh_prices.py``
(``make refresh-prices``) rewrites the file from the clouds' public pricing APIs.

Import-light: only the standard library and pydantic (which the spec already loads at DAG-parse time); the
file is read and validated on first use, not at import.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: The file shipped with the package (``[tool.setuptools.package-data]`` puts it in the wheel).
PRICES_FILE = Path(__file__).resolve().parent / "data" / "prices.json"
SCHEMA_VERSION = 1

_DATE = r"\d{4}-\d{2}(-\d{2})?"


class PriceTableError(ValueError):
    """The price file cannot be read or does not match the schema; the message names the file and entry."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """On-demand and (where known) spot USD per hour."""

    on_demand: float = Field(ge=0)
    spot: float | None = Field(default=None, ge=0)

    @field_validator("on_demand", "spot")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _spot_not_above_on_demand(self) -> Price:
        if self.spot is not None and self.spot > self.on_demand:
            raise ValueError(f"spot {self.spot} is above on_demand {self.on_demand}")
        return self


class RegionPrices(_Strict):
    machines: dict[str, Price]
    #: GPUs attached to a machine (Vertex N1), per GPU-hour.
    accelerators: dict[str, Price] = {}


class GpuFamily(_Strict):
    """GPUs per size of an instance family; ``"*"`` is every size not named."""

    gpu_type: str
    gpus: dict[str, int]

    @field_validator("gpus")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = [size for size, count in value.items() if count < 1]
        if bad:
            raise ValueError(f"GPU counts must be at least 1 (sizes {', '.join(bad)})")
        return value


class MachineType(_Strict):
    """A machine's shape, where the refresh needs it (Vertex bills per vCPU, GB of RAM and GPU)."""

    vcpus: int = Field(ge=1)
    memory_gb: float = Field(gt=0)
    gpus: int = Field(default=0, ge=0)
    gpu_type: str | None = None

    @model_validator(mode="after")
    def _gpu_type_with_gpus(self) -> MachineType:
        if bool(self.gpus) != bool(self.gpu_type):
            raise ValueError("gpus and gpu_type go together")
        return self


class CloudPrices(_Strict):
    source: str = Field(min_length=1)
    retrieved: str = Field(pattern=f"^{_DATE}$")
    default_region: str
    spot_is_on_demand: bool = False
    gpu_families: dict[str, GpuFamily] = {}
    machine_types: dict[str, MachineType] = {}
    regions: dict[str, RegionPrices]

    @model_validator(mode="after")
    def _consistent(self) -> CloudPrices:
        if self.default_region not in self.regions:
            raise ValueError(f"default_region {self.default_region!r} has no entry in regions")
        if self.spot_is_on_demand:
            for region, prices in self.regions.items():
                for name, price in prices.machines.items():
                    if price.spot != price.on_demand:
                        raise ValueError(
                            f"regions.{region}.machines[{name}]: spot must equal on_demand (spot_is_on_demand)"
                        )
        return self


class PriceTable(_Strict):
    schema_version: Literal[1]
    version: str = Field(pattern=f"^{_DATE}$")
    currency: Literal["USD"]
    clouds: dict[str, CloudPrices]


def _where(loc: tuple) -> str:
    """``clouds.sagemaker.regions.us-east-1.machines['ml.m5.xlarge'].spot`` from a pydantic location."""
    parts = ""
    for key in loc:
        key = str(key)
        parts += f"[{key!r}]" if "." in key or not re.fullmatch(r"[\w-]+", key) else f".{key}"
    return parts.lstrip(".")


def parse_price_table(data: object, source: str) -> PriceTable:
    """Validate ``data`` (the parsed JSON); errors name ``source`` and the first bad entry."""
    try:
        return PriceTable.model_validate(data)
    except ValidationError as e:
        first, *rest = e.errors()
        more = f" (and {len(rest)} more problem{'s' if len(rest) > 1 else ''})" if rest else ""
        raise PriceTableError(f"{source}: {_where(first['loc']) or 'top level'}: {first['msg']}{more}") from None


def read_price_table(path: Path) -> PriceTable:
    """Read and validate a price file (uncached: the refresh script reads the file it is about to rewrite)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise PriceTableError(f"{path}: cannot read the price table: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PriceTableError(f"{path}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    return parse_price_table(data, str(path))


#: :func:`read_price_table`, cached per path: the shipped file is read and validated once per process.
load_price_table = cache(read_price_table)


def price_table() -> PriceTable:
    """The table in use: :data:`PRICES_FILE`, read and validated on first use."""
    return load_price_table(PRICES_FILE)


def dump_price_table(table: PriceTable) -> str:
    """The file's text: indented JSON with each price and machine shape on one line (reviewable diffs)."""
    data = table.model_dump(exclude_defaults=True)
    # Defaults that carry meaning stay explicit.
    data["schema_version"], data["currency"] = table.schema_version, table.currency
    return _dump(data, 0) + "\n"


def _dump(value: object, depth: int) -> str:
    if not isinstance(value, dict) or not value or all(not isinstance(v, dict) for v in value.values()):
        return json.dumps(value)
    pad, inner = "  " * depth, "  " * (depth + 1)
    items = ",\n".join(f"{inner}{json.dumps(k)}: {_dump(v, depth + 1)}" for k, v in value.items())
    return "{\n" + items + "\n" + pad + "}"
