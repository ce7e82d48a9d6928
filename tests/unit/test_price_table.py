"""The price table is one data file (airflow_retrain/data/prices.json): it loads, validates, prices what the
examples and catalogs name, and is what the cost model reads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airflow_retrain import cost
from airflow_retrain import price_table as pt
from airflow_retrain.cost import UnknownPriceError, estimate_cost, hourly_prices
from airflow_retrain.training import sagemaker_catalog, vertex_catalog

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted([*ROOT.glob("include/pipelines/*.yaml"), *ROOT.glob("include/examples/*/*.yaml")])


@pytest.fixture
def table_copy(tmp_path, monkeypatch):
    """A copy of the shipped table's data, and a function that makes an edited copy the table in use."""
    data = json.loads(pt.PRICES_FILE.read_text())

    def use(edited: dict) -> Path:
        path = tmp_path / f"prices-{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps(edited))
        monkeypatch.setattr(pt, "PRICES_FILE", path)
        return path

    return data, use


def test_the_shipped_file_validates_and_is_in_the_format_the_refresh_writes():
    table = pt.load_price_table(pt.PRICES_FILE)
    assert table.schema_version == pt.SCHEMA_VERSION
    assert {"local", "sagemaker", "vertex"} <= table.clouds.keys()
    # The refresh script writes dump_price_table's layout: a hand edit in another layout would make its diffs noisy.
    assert pt.dump_price_table(table) == pt.PRICES_FILE.read_text()
    assert cost.PRICE_FILE_NAME == "/".join(pt.PRICES_FILE.parts[-3:])  # what error messages call it


def _spec_instance_types(path: Path) -> list[tuple[str, str, str | None]]:
    training = yaml.safe_load(path.read_text())["training"]
    backend = training.get("backend", "local")
    if backend == "vertex":
        vertex = training["vertex"]
        key = vertex_catalog.price_key(vertex["machine_type"], vertex.get("accelerator_type"),
                                       vertex.get("accelerator_count", 1))
        return [(backend, key, vertex.get("region"))]
    region = (training.get(backend) or {}).get("region")
    return [(backend, training.get("resources", {}).get("instance_type", "local"), region)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_spec_instance_type_is_priced_in_its_region(spec):
    for backend, instance_type, region in _spec_instance_types(spec):
        on_demand, spot, source = hourly_prices(backend, instance_type, region=region)
        assert source == "table" and on_demand >= 0, (spec, instance_type)


def test_every_priced_type_is_one_the_catalogs_accept():
    table = pt.price_table()
    sagemaker_types = sagemaker_catalog.training_instance_types()
    for region, prices in table.clouds["sagemaker"].regions.items():
        for itype in prices.machines:
            assert itype in sagemaker_types, (region, itype)
            # a GPU type the table prices must have a GPU count, or GPU-hours would be wrong
            assert sagemaker_catalog.gpus_per_instance(itype) is not None, itype
    gpu_names = {a.lower().replace("_", "-"): a for a in vertex_catalog.accelerator_types()}
    for region, prices in table.clouds["vertex"].regions.items():
        for key in prices.machines:
            machine, accelerator, count = vertex_catalog.parse_price_key(key)
            gpu = gpu_names.get(accelerator or "")
            if gpu is None and vertex_catalog.machine_family(machine).fixed_count:  # A2/A3 keys omit their GPUs
                gpu, count = vertex_catalog.machine_family(machine).accelerators[0], vertex_catalog.fixed_accelerator_count(machine)
            assert vertex_catalog.machine_problems(machine, gpu, count, "t") == [], key
        for name in prices.accelerators:
            assert name in gpu_names, (region, name)


def test_vertex_machine_shapes_agree_with_the_catalog():
    for machine, shape in pt.price_table().clouds["vertex"].machine_types.items():
        assert (vertex_catalog.fixed_accelerator_count(machine) or 0) == shape.gpus, machine
        if shape.gpu_type:
            assert shape.gpu_type in vertex_catalog.machine_family(machine).accelerators, machine


def test_every_catalog_machine_type_is_priced_in_the_default_region():
    for name, cloud in pt.price_table().clouds.items():
        default = cloud.regions[cloud.default_region]
        for machine in cloud.machine_types:
            assert any(key.split("+")[0] == machine for key in default.machines), (name, machine)


@pytest.mark.parametrize(
    ("edit", "where", "message"),
    [
        (lambda d: d["clouds"]["sagemaker"]["regions"]["us-east-1"]["machines"]["ml.m5.xlarge"].update(spot="cheap"),
         "clouds.sagemaker.regions.us-east-1.machines['ml.m5.xlarge'].spot", "valid number"),
        (lambda d: d["clouds"]["vertex"]["regions"]["us-central1"]["machines"]["n1-standard-4"].update(spot=9.0),
         "clouds.vertex.regions.us-central1.machines.n1-standard-4", "spot 9.0 is above on_demand"),
        (lambda d: d["clouds"]["vertex"]["regions"]["us-central1"]["accelerators"]["nvidia-tesla-t4"].pop("on_demand"),
         "clouds.vertex.regions.us-central1.accelerators.nvidia-tesla-t4.on_demand", "Field required"),
        (lambda d: d["clouds"]["sagemaker"].update(default_region="mars-1"),
         "clouds.sagemaker", "default_region 'mars-1' has no entry in regions"),
        (lambda d: d["clouds"]["sagemaker"]["gpu_families"]["g5"]["gpus"].update({"2xlarge": 0}),
         "clouds.sagemaker.gpu_families.g5.gpus", "at least 1"),
        (lambda d: d["clouds"]["local"].update(retrieved="last week"), "clouds.local.retrieved", "pattern"),
        (lambda d: d.update(schema_version=2), "schema_version", "Input should be 1"),
        (lambda d: d["clouds"]["sagemaker"]["regions"]["us-east-1"]["machines"]["ml.m5.xlarge"].update(usd=1),
         "clouds.sagemaker.regions.us-east-1.machines['ml.m5.xlarge'].usd", "Extra inputs"),
    ],
    ids=["spot-not-a-number", "spot-above-on-demand", "on-demand-missing", "default-region-missing",
         "zero-gpus", "bad-retrieved-date", "unknown-schema-version", "unknown-field"],
)
def test_a_malformed_file_is_one_error_naming_the_file_and_the_entry(table_copy, edit, where, message):
    data, use = table_copy
    edit(data)
    path = use(data)
    with pytest.raises(pt.PriceTableError) as e:
        estimate_cost("sagemaker", "ml.m5.xlarge", 60)
    assert str(e.value).startswith(f"{path}: {where}: "), str(e.value)
    assert message in str(e.value)


def test_invalid_json_names_the_file_line_and_column(tmp_path, monkeypatch):
    path = tmp_path / "prices.json"
    path.write_text('{\n  "schema_version": 1,\n  "version": "2026-11",,\n}')
    monkeypatch.setattr(pt, "PRICES_FILE", path)
    with pytest.raises(pt.PriceTableError, match=rf"^{re.escape(str(path))}: not valid JSON at line 3 column 24: "):
        pt.price_table()


def test_a_price_change_in_the_file_changes_the_estimate(table_copy):
    data, use = table_copy
    machines = data["clouds"]["sagemaker"]["regions"]["us-east-1"]["machines"]
    before = estimate_cost("sagemaker", "ml.m5.xlarge", 3600, instance_count=2)
    new_price = machines["ml.m5.xlarge"]["on_demand"] * 3
    machines["ml.m5.xlarge"] = {"on_demand": new_price, "spot": new_price}
    data["version"] = "2027-01-15"
    use(data)
    after = estimate_cost("sagemaker", "ml.m5.xlarge", 3600, instance_count=2)
    assert after.usd == round(2 * new_price, 6) != before.usd
    assert after.price_table_version == "2027-01-15" != before.price_table_version


def test_gpu_counts_come_from_the_table(table_copy):
    data, use = table_copy
    assert sagemaker_catalog.gpus_per_instance("ml.g5.12xlarge") == data["clouds"]["sagemaker"]["gpu_families"]["g5"]["gpus"]["12xlarge"]
    data["clouds"]["sagemaker"]["gpu_families"]["g5"]["gpus"]["12xlarge"] = 2
    use(data)
    assert sagemaker_catalog.gpus_per_instance("ml.g5.12xlarge") == 2
    assert sagemaker_catalog.GPUS_PER_INSTANCE["g5"]["12xlarge"] == 2
    assert estimate_cost("sagemaker", "ml.g5.12xlarge", 3600, instance_count=3).gpus == 6


def test_a_spot_job_on_a_type_without_a_spot_price_has_no_table_price(table_copy):
    data, use = table_copy
    region = data["clouds"]["vertex"]["regions"]["us-central1"]
    region["accelerators"]["nvidia-tesla-v100"] = {"on_demand": 2.5}  # no spot column
    use(data)
    machine = region["machines"]["n1-standard-4"]["on_demand"]
    on_demand = estimate_cost("vertex", "n1-standard-4+2xnvidia-tesla-v100", 3600)
    assert on_demand.hourly_price_usd == round(machine + 2 * 2.5, 6)
    with pytest.raises(UnknownPriceError, match=r"no spot price for vertex instance type 'n1-standard-4\+2xnvidia-tesla-v100'"
                                                r" in region 'us-central1'.*hourly_price_usd"):
        estimate_cost("vertex", "n1-standard-4+2xnvidia-tesla-v100", 3600, spot=True)
    assert estimate_cost("vertex", "n1-standard-4+2xnvidia-tesla-v100", 3600, 1, 0.9, spot=True).usd == 0.9


def test_the_table_is_read_on_first_use_not_at_import():
    code = ("import airflow_retrain.cost as c, airflow_retrain.price_table as p; "
            "before = p.load_price_table.cache_info().currsize; c.estimate_cost('sagemaker', 'ml.m5.xlarge', 60); "
            "c.estimate_cost('vertex', 'n1-standard-4', 60); info = p.load_price_table.cache_info(); "
            "print(before, info.currsize, info.misses)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "1", "1"]  # nothing at import; one read for every later lookup
