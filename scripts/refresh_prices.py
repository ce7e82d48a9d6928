"""Rebuild the price table (``airflow_retrain/data/prices.json``) from the clouds' public pricing APIs.

``make refresh-prices`` (arguments in ``REFRESH_PRICES_ARGS``)::

    python scripts/refresh_prices.py --dry-run                  # print what would change, write nothing
    python scripts/refresh_prices.py                            # rewrite the file
    python scripts/refresh_prices.py --cloud sagemaker --aws-region ap-south-1 --dry-run
    python scripts/refresh_prices.py --recorded tests/fixtures/pricing --dry-run   # offline, saved responses

What it refreshes: the instance types the file already lists (SageMaker machines; Vertex machines and
accelerators), in the regions it lists plus ``--aws-region``/``--gcp-region``; ``--aws-type`` and
``--gcp-machine`` add types (a Vertex machine needs its shape in ``machine_types``). An entry the API no
longer answers for is dropped and shown as ``-`` in the diff; the file is written only when every
cloud's default region still has prices.

Sources (both public list prices in USD, no account needed):

* SageMaker: the AWS Price List Bulk API. ``region_index.json`` of the ``AmazonSageMaker`` offer names
  each region's current offer file; in it, products of ``productFamily`` "ML Instance" whose usage type is
  ``<region code>-Train:<instance type>`` are training instances, priced by their ``OnDemand`` term
  (USD per ``Hrs``). Spot is written equal to on-demand: SageMaker managed spot bills the on-demand rate
  for fewer billable seconds (see :mod:`airflow_retrain.cost`).
* Vertex AI: the Cloud Billing Catalog API, ``services/C7E2-9256-1C43/skus`` (Vertex AI), paged. Custom
  training bills per vCPU-hour and GiB-hour of the machine family and per GPU-hour; SKUs are matched by
  their description ("... Training ... N1 ... Core/Ram ...", "... Nvidia Tesla T4 GPU ..."),
  ``category.usageType`` "OnDemand" or "Preemptible" (Spot) and ``serviceRegions``. A machine's price is
  vCPUs x core rate + memory x RAM rate (+ its built-in GPUs), from ``machine_types`` in the file. The API
  needs an API key: from the environment variable named by ``--api-key-env`` (default
  ``CLOUD_BILLING_API_KEY``) or an Airflow connection (``--gcp-conn-id``: its password or extra
  ``api_key``), never from the command line.

Nothing here guesses: a type or region the API does not price is left out, and the cost model then tells
the user to set ``training.resources.hourly_price_usd``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from airflow_retrain.price_table import (
    PRICES_FILE,
    CloudPrices,
    MachineType,
    Price,
    PriceTable,
    RegionPrices,
    dump_price_table,
    parse_price_table,
    read_price_table,
)
from airflow_retrain.training.vertex_catalog import UnknownMachineError, parse_price_key

AWS_PRICING = "https://pricing.us-east-1.amazonaws.com"
AWS_REGION_INDEX = "/offers/v1.0/aws/AmazonSageMaker/current/region_index.json"
VERTEX_SERVICE = "C7E2-9256-1C43"  # Vertex AI in the Cloud Billing Catalog
GCP_SKUS = f"https://cloudbilling.googleapis.com/v1/services/{VERTEX_SERVICE}/skus"
SAGEMAKER_SOURCE = (
    "AWS Price List Bulk API, offer AmazonSageMaker, productFamily 'ML Instance', usage type '<region>-Train:<type>'"
)
VERTEX_SOURCE = f"Cloud Billing Catalog API, service Vertex AI ({VERTEX_SERVICE}), custom training SKUs"

#: Price-table accelerator names -> a pattern of the GPU in a SKU description.
GPU_PATTERNS: dict[str, str] = {
    "nvidia-tesla-t4": r"\bT4\b",
    "nvidia-tesla-p4": r"\bP4\b",
    "nvidia-tesla-p100": r"\bP100\b",
    "nvidia-tesla-v100": r"\bV100\b",
    "nvidia-tesla-k80": r"\bK80\b",
    "nvidia-tesla-a100": r"\bA100\b(?!\s*80)",
    "nvidia-a100-80gb": r"\bA100\s*80\s*GB\b",
    "nvidia-l4": r"\bL4\b",
    "nvidia-h100-80gb": r"\bH100\b(?!.*\bMega\b)",
    "nvidia-h100-mega-80gb": r"\bH100\b.*\bMega\b",
}
_MACHINE_RESOURCE = re.compile(r"\b(?P<family>[A-Z]\d[A-Z]?)\b.*\b(?P<resource>Core|Ram)\b", re.IGNORECASE)
# Billed the same words but not what a predefined training machine pays.
_NOT_TRAINING = re.compile(r"predict|custom instance|extended|sole tenan|commit|reserv", re.IGNORECASE)

Fetch = Callable[[str], dict]


class RefreshError(RuntimeError):
    """A response the refresh cannot use; the message names the source and entry."""


# --- AWS Price List -----------------------------------------------------------------------------------


def sagemaker_training_prices(offer: dict) -> dict[str, float]:
    """Instance type -> on-demand USD/hour of every SageMaker training instance in one region's offer file."""
    on_demand_terms = offer.get("terms", {}).get("OnDemand", {})
    prices: dict[str, float] = {}
    for sku, product in offer.get("products", {}).items():
        if product.get("productFamily") != "ML Instance":
            continue
        match = re.fullmatch(r"(?:[A-Z0-9]+-)?Train:(ml\.[a-z0-9-]+\.[a-z0-9]+)", product["attributes"].get("usagetype", ""))
        if match is None:
            continue  # hosting, notebooks, processing, spot/flex variants
        rates = {
            float(dim["pricePerUnit"]["USD"])
            for term in on_demand_terms.get(sku, {}).values()
            for dim in term.get("priceDimensions", {}).values()
            if dim.get("unit") in ("Hrs", "Hours") and "USD" in dim.get("pricePerUnit", {})
        }
        rates.discard(0.0)  # a zero dimension is a free-tier allowance, not the list price
        if not rates:
            continue
        itype = match.group(1)
        if len(rates) > 1 or (itype in prices and prices[itype] not in rates):
            raise RefreshError(f"AWS offer: {itype} has more than one on-demand training price ({sorted(rates)})")
        prices[itype] = rates.pop()
    return prices


def fetch_sagemaker(fetch: Fetch, regions: Iterable[str]) -> dict[str, dict[str, float]]:
    """Region -> instance type -> on-demand price, for the regions the offer's region index knows."""
    index = fetch(AWS_PRICING + AWS_REGION_INDEX)["regions"]
    found: dict[str, dict[str, float]] = {}
    for region in regions:
        if region not in index:
            print(f"  sagemaker: the price list has no region {region!r}", file=sys.stderr)
            continue
        found[region] = sagemaker_training_prices(fetch(AWS_PRICING + index[region]["currentVersionUrl"]))
    return found


# --- Cloud Billing Catalog ----------------------------------------------------------------------------


def _unit_price(sku: dict) -> tuple[float, str] | None:
    """The first-tier USD unit price and usage unit of a SKU's current pricing."""
    infos = sku.get("pricingInfo") or []
    if not infos:
        return None
    expression = infos[-1]["pricingExpression"]
    tiers = sorted(expression.get("tieredRates", []), key=lambda t: float(t.get("startUsageAmount", 0)))
    if not tiers:
        return None
    money = tiers[0]["unitPrice"]
    if money.get("currencyCode", "USD") != "USD":
        raise RefreshError(f"Cloud Billing SKU {sku.get('skuId')}: prices in {money['currencyCode']}, not USD")
    return int(money.get("units") or 0) + int(money.get("nanos") or 0) / 1e9, expression.get("usageUnit", "")


def vertex_training_rates(skus: Iterable[dict]) -> dict[tuple[str, str, str, bool], float]:
    """``(region, "core"|"ram"|"gpu", family or accelerator, spot) -> USD`` per vCPU-, GiB- or GPU-hour."""
    rates: dict[tuple[str, str, str, bool], float] = {}
    for sku in skus:
        description = sku.get("description", "")
        usage = sku.get("category", {}).get("usageType", "")
        if "training" not in description.lower() or _NOT_TRAINING.search(description):
            continue
        if usage not in ("OnDemand", "Preemptible"):
            continue
        spot = usage == "Preemptible"
        gpu = next((name for name, pattern in GPU_PATTERNS.items()
                    if re.search(r"\bGPU\b", description) and re.search(pattern, description)), None)
        if gpu is not None:
            kind, name, unit = "gpu", gpu, "h"
        elif match := _MACHINE_RESOURCE.search(description):
            kind, name = match["resource"].lower(), match["family"].lower()
            unit = "h" if kind == "core" else "GiBy.h"
        else:
            continue
        priced = _unit_price(sku)
        if priced is None or priced[1] != unit:
            continue
        for region in sku.get("serviceRegions", []):
            key = (region, kind, name, spot)
            if key in rates and rates[key] != priced[0]:
                raise RefreshError(f"Cloud Billing SKU {sku.get('skuId')}: a second {kind} rate for {name} in {region}")
            rates[key] = priced[0]
    return rates


def fetch_vertex_skus(fetch: Fetch, api_key: str) -> list[dict]:
    """Every Vertex AI SKU, following ``nextPageToken``."""
    skus: list[dict] = []
    token = ""
    while True:
        query = {"key": api_key, "currencyCode": "USD", "pageSize": "5000", **({"pageToken": token} if token else {})}
        page = fetch(f"{GCP_SKUS}?{urllib.parse.urlencode(query)}")
        skus.extend(page.get("skus", []))
        token = page.get("nextPageToken", "")
        if not token:
            return skus


def vertex_machine_price(
    key: str, shapes: dict[str, MachineType], rates: dict, region: str, spot: bool
) -> float | None:
    """One replica's price from per-resource rates; None when a rate or the machine's shape is missing."""
    try:
        machine, accelerator, count = parse_price_key(key)
    except UnknownMachineError:
        return None
    shape = shapes.get(machine)
    family = machine.split("-", 1)[0]
    core, ram = rates.get((region, "core", family, spot)), rates.get((region, "ram", family, spot))
    if shape is None or core is None or ram is None:
        return None
    price = shape.vcpus * core + shape.memory_gb * ram
    # Built-in GPUs (A2/A3/G2) come from the shape; the key's suffix only names them. N1 keys attach them.
    gpu, gpus = (shape.gpu_type.lower().replace("_", "-"), shape.gpus) if shape.gpus and shape.gpu_type else (
        accelerator, count)
    if gpu:
        gpu_rate = rates.get((region, "gpu", gpu, spot))
        if gpu_rate is None:
            return None
        price += gpus * gpu_rate
    return round(price, 6)


def vertex_region_prices(
    rates: dict, shapes: dict[str, MachineType], region: str, machines: Iterable[str], accelerators: Iterable[str]
) -> RegionPrices | None:
    found_machines: dict[str, Price] = {}
    for key in machines:
        on_demand = vertex_machine_price(key, shapes, rates, region, spot=False)
        if on_demand is not None:
            spot = vertex_machine_price(key, shapes, rates, region, spot=True)
            found_machines[key] = Price(on_demand=on_demand, spot=spot if spot is None or spot <= on_demand else None)
    found_gpus: dict[str, Price] = {}
    for name in accelerators:
        on_demand = rates.get((region, "gpu", name, False))
        if on_demand is not None:
            spot = rates.get((region, "gpu", name, True))
            found_gpus[name] = Price(on_demand=round(on_demand, 6), spot=None if spot is None else round(spot, 6))
    return RegionPrices(machines=found_machines, accelerators=found_gpus) if found_machines else None


# --- building the new table ---------------------------------------------------------------------------


def refresh_sagemaker(cloud: CloudPrices, by_region: dict[str, dict[str, float]], extra_types: Iterable[str],
                      today: str) -> CloudPrices:
    wanted = {t for prices in cloud.regions.values() for t in prices.machines} | set(extra_types)
    regions = {
        region: RegionPrices(machines={t: Price(on_demand=p, spot=p) for t, p in sorted(prices.items()) if t in wanted})
        for region, prices in by_region.items()
    }
    regions = {region: prices for region, prices in regions.items() if prices.machines}
    return cloud.model_copy(update={"regions": regions, "retrieved": today, "source": SAGEMAKER_SOURCE})


def refresh_vertex(cloud: CloudPrices, rates: dict, regions: Iterable[str], extra_machines: Iterable[str],
                   today: str) -> CloudPrices:
    machines = sorted({m for prices in cloud.regions.values() for m in prices.machines} | set(extra_machines))
    gpus = sorted({g for prices in cloud.regions.values() for g in prices.accelerators})
    found = {region: vertex_region_prices(rates, cloud.machine_types, region, machines, gpus) for region in regions}
    return cloud.model_copy(update={
        "regions": {region: prices for region, prices in found.items() if prices is not None},
        "retrieved": today,
        "source": VERTEX_SOURCE,
    })


def rebuilt(current: PriceTable, clouds: dict[str, CloudPrices], today: str) -> PriceTable:
    """The new table, validated like the shipped one (a default region without prices is an error)."""
    merged = {**current.clouds, **clouds}
    data = current.model_dump()
    data.update(version=today, clouds={name: cloud.model_dump() for name, cloud in merged.items()})
    return parse_price_table(data, "the refreshed price table")


def diff(old: PriceTable, new: PriceTable) -> list[str]:
    """One line per changed price: ``~`` changed, ``+`` added, ``-`` dropped (no longer answered for)."""
    def flat(table: PriceTable) -> dict[tuple[str, str, str, str], Price]:
        return {
            (cloud, region, group, key): price
            for cloud, prices in table.clouds.items()
            for region, entries in prices.regions.items()
            for group in ("machines", "accelerators")
            for key, price in getattr(entries, group).items()
        }

    before, after = flat(old), flat(new)
    lines = [f"version {old.version} -> {new.version}"] if old.version != new.version else []

    def show(p: Price) -> str:
        return f"{p.on_demand}/{'-' if p.spot is None else p.spot}"

    for key in sorted(before.keys() | after.keys()):
        where = " ".join(part for part in key if part != "machines")
        if key not in after:
            lines.append(f"- {where} {show(before[key])}")
        elif key not in before:
            lines.append(f"+ {where} {show(after[key])}")
        elif before[key] != after[key]:
            lines.append(f"~ {where} {show(before[key])} -> {show(after[key])}")
    return lines


# --- I/O ----------------------------------------------------------------------------------------------


def http_fetch(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 - fixed https endpoints
        return json.load(response)


def recorded_fetch(folder: Path) -> Fetch:
    """Serve saved responses: ``aws/region_index.json``, ``aws/<region>.json``, ``gcp/skus[-<pageToken>].json``."""
    def fetch(url: str) -> dict:
        parsed = urllib.parse.urlparse(url)
        if parsed.path.endswith("region_index.json"):
            path = folder / "aws" / "region_index.json"
        elif parsed.netloc.startswith("pricing."):
            path = folder / "aws" / f"{parsed.path.split('/')[-2]}.json"  # .../<version>/<region>/index.json
        else:
            token = urllib.parse.parse_qs(parsed.query).get("pageToken", [""])[0]
            path = folder / "gcp" / (f"skus-{token}.json" if token else "skus.json")
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise RefreshError(f"no recorded response for {url.split('?')[0]} ({path})") from None
    return fetch


def gcp_api_key(env_name: str, conn_id: str | None) -> str:
    """The Cloud Billing API key from an Airflow connection or the environment (never from argv)."""
    if conn_id:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
        key = conn.password or conn.extra_dejson.get("api_key")
        if not key:
            raise RefreshError(f"connection {conn_id!r} has no password or extra 'api_key' holding the API key")
        return key
    key = os.environ.get(env_name, "")
    if not key:
        raise RefreshError(f"set {env_name} (a Cloud Billing API key) or pass --gcp-conn-id; or --cloud sagemaker")
    return key


def main(argv: list[str] | None = None) -> int:
    # allow_abbrev=False: "--api-key KEY" must not pass as an abbreviation of --api-key-env
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--prices", type=Path, default=PRICES_FILE, help="the price file (default: the package's)")
    parser.add_argument("--cloud", choices=("sagemaker", "vertex"), action="append",
                        help="refresh only this cloud (repeatable; default both)")
    parser.add_argument("--aws-region", action="append", default=[], help="also price this SageMaker region")
    parser.add_argument("--aws-type", action="append", default=[], help="also price this SageMaker instance type")
    parser.add_argument("--gcp-region", action="append", default=[], help="also price this Vertex region")
    parser.add_argument("--gcp-machine", action="append", default=[],
                        help="also price this Vertex machine (its shape must be in machine_types)")
    parser.add_argument("--api-key-env", default="CLOUD_BILLING_API_KEY",
                        help="environment variable holding the Cloud Billing API key")
    parser.add_argument("--gcp-conn-id", help="Airflow connection whose password (or extra api_key) is the key")
    parser.add_argument("--recorded", type=Path, help="read saved API responses from this folder, not the network")
    parser.add_argument("--dry-run", action="store_true", help="print the changes; write nothing")
    args = parser.parse_args(argv)

    current = read_price_table(args.prices)
    clouds = args.cloud or ["sagemaker", "vertex"]
    fetch = recorded_fetch(args.recorded) if args.recorded else http_fetch
    today = dt.datetime.now(dt.UTC).date().isoformat()
    refreshed: dict[str, CloudPrices] = {}
    try:
        if "sagemaker" in clouds:
            cloud = current.clouds["sagemaker"]
            regions = list(dict.fromkeys([*cloud.regions, *args.aws_region]))
            refreshed["sagemaker"] = refresh_sagemaker(cloud, fetch_sagemaker(fetch, regions), args.aws_type, today)
        if "vertex" in clouds:
            cloud = current.clouds["vertex"]
            key = "recorded" if args.recorded else gcp_api_key(args.api_key_env, args.gcp_conn_id)
            rates = vertex_training_rates(fetch_vertex_skus(fetch, key))
            regions = list(dict.fromkeys([*cloud.regions, *args.gcp_region]))
            refreshed["vertex"] = refresh_vertex(cloud, rates, regions, args.gcp_machine, today)
        new = rebuilt(current, refreshed, today)
    except (RefreshError, ValueError) as e:
        print(f"refresh-prices: {e}", file=sys.stderr)
        return 1
    changes = diff(current, new)
    print("\n".join(changes) if changes else "no price changed")
    if not args.dry_run:
        args.prices.write_text(dump_price_table(new), encoding="utf-8")
        print(f"wrote {args.prices}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
