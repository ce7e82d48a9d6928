"""scripts/refresh_prices.py against recorded responses of the AWS Price List and Cloud Billing Catalog APIs
(tests/fixtures/pricing: hand-made in the APIs' shapes, made-up numbers)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from airflow_retrain import price_table as pt
from airflow_retrain.cost import estimate_cost

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests" / "fixtures" / "pricing"


@pytest.fixture(scope="module")
def refresh():
    spec = importlib.util.spec_from_file_location("refresh_prices", ROOT / "scripts" / "refresh_prices.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def prices(tmp_path) -> Path:
    """A copy of the small fixture table, to refresh in place."""
    path = tmp_path / "prices.json"
    shutil.copy(RECORDED / "prices.json", path)
    return path


def recorded(name: str) -> dict:
    return json.loads((RECORDED / name).read_text())


def test_sagemaker_offer_yields_only_training_instances(refresh):
    # The offer also lists hosting, notebook and processing prices of the same types, and storage.
    assert refresh.sagemaker_training_prices(recorded("aws/us-east-1.json")) == {
        "ml.m5.xlarge": 0.23, "ml.g5.xlarge": 1.408, "ml.p3.2xlarge": 3.9, "ml.c6i.xlarge": 0.2,
    }


def test_two_training_prices_for_one_type_is_an_error_naming_it(refresh):
    offer = recorded("aws/us-east-1.json")
    sku, product = next((s, p) for s, p in offer["products"].items() if p["attributes"]["usagetype"] == "USE1-Train:ml.m5.xlarge")
    offer["products"]["DUPLICATE"] = {**product, "sku": "DUPLICATE"}
    term = json.loads(json.dumps(offer["terms"]["OnDemand"][sku]).replace("0.2300000000", "0.2500000000"))
    offer["terms"]["OnDemand"]["DUPLICATE"] = term
    with pytest.raises(refresh.RefreshError, match=r"ml\.m5\.xlarge has more than one on-demand training price"):
        refresh.sagemaker_training_prices(offer)


def test_vertex_skus_become_per_resource_training_rates(refresh):
    skus = recorded("gcp/skus.json")["skus"] + recorded("gcp/skus-p2.json")["skus"]
    rates = refresh.vertex_training_rates(skus)
    assert rates[("us-central1", "core", "n1", False)] == 0.0363527  # not the prediction or custom-machine SKU
    assert rates[("us-central1", "ram", "n1", True)] == 0.000976
    assert rates[("us-central1", "gpu", "nvidia-tesla-t4", True)] == 0.1425
    assert rates[("us-central1", "gpu", "nvidia-tesla-a100", False)] == 3.3741
    assert rates[("europe-west4", "gpu", "nvidia-tesla-t4", False)] == 0.4025
    assert ("europe-west4", "gpu", "nvidia-tesla-t4", True) not in rates  # no Spot SKU recorded there
    assert not any(kind == "core" and rate == 0.0199 for (_, kind, _, _), rate in rates.items())  # commitment


def test_a_vertex_machine_is_priced_from_its_shape_and_gpus(refresh):
    skus = recorded("gcp/skus.json")["skus"] + recorded("gcp/skus-p2.json")["skus"]
    rates = refresh.vertex_training_rates(skus)
    shapes = pt.read_price_table(RECORDED / "prices.json").clouds["vertex"].machine_types

    def rate(kind, name, spot=False):
        return rates[("us-central1", kind, name, spot)]

    def price(key, spot=False):
        return refresh.vertex_machine_price(key, shapes, rates, "us-central1", spot)

    n1 = 4 * rate("core", "n1") + 15 * rate("ram", "n1")
    assert price("n1-standard-4") == round(n1, 6)
    assert price("n1-standard-4+2xnvidia-tesla-t4", spot=True) == round(
        4 * rate("core", "n1", True) + 15 * rate("ram", "n1", True) + 2 * rate("gpu", "nvidia-tesla-t4", True), 6)
    # Built-in GPUs once: the G2 key's "+nvidia-l4" names the L4 the shape already counts.
    assert price("g2-standard-8+nvidia-l4") == round(8 * rate("core", "g2") + 32 * rate("ram", "g2") + rate("gpu", "nvidia-l4"), 6)
    assert price("a2-highgpu-1g") == round(12 * rate("core", "a2") + 85 * rate("ram", "a2") + rate("gpu", "nvidia-tesla-a100"), 6)
    assert price("n1-standard-4+nvidia-tesla-v100") is None  # no V100 SKU recorded: no guess
    assert price("n1-standard-8") is None  # no shape in machine_types


def test_pages_are_followed_and_the_key_goes_in_the_query(refresh):
    urls: list[str] = []
    serve = refresh.recorded_fetch(RECORDED)

    def fetch(url):
        urls.append(url)
        return serve(url)

    skus = refresh.fetch_vertex_skus(fetch, "the-key")
    assert len(skus) == len(recorded("gcp/skus.json")["skus"]) + len(recorded("gcp/skus-p2.json")["skus"])
    assert len(urls) == 2 and all("key=the-key" in url for url in urls)
    assert urls[0].startswith(f"https://cloudbilling.googleapis.com/v1/services/{refresh.VERTEX_SERVICE}/skus?")
    assert "pageToken=p2" in urls[1]


def test_dry_run_prints_the_diff_and_writes_nothing(refresh, prices, capsys):
    before = prices.read_text()
    assert refresh.main(["--prices", str(prices), "--recorded", str(RECORDED), "--dry-run",
                         "--aws-region", "ap-south-1", "--gcp-region", "europe-west4"]) == 0
    out = capsys.readouterr().out.splitlines()
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert out[0] == f"version 2026-11 -> {today}"
    assert "~ sagemaker us-east-1 ml.p3.2xlarge 3.825/3.825 -> 3.9/3.9" in out
    assert "+ sagemaker ap-south-1 ml.m5.xlarge 0.269/0.269" in out
    assert "- sagemaker us-east-1 ml.m5.large 0.115/0.115" in out  # the offer no longer answers for it
    assert "+ vertex europe-west4 accelerators nvidia-tesla-t4 0.4025/-" in out
    assert "- vertex us-central1 accelerators nvidia-tesla-v100 2.852/-" in out
    assert not any("ml.m5.xlarge" in line and "us-east-1" in line for line in out)  # unchanged: not shown
    assert not any("c6i" in line for line in out)  # in the offer, not in the table: not added
    assert prices.read_text() == before


def test_refresh_writes_a_table_the_cost_model_reads(refresh, prices, monkeypatch, capsys):
    assert refresh.main(["--prices", str(prices), "--recorded", str(RECORDED), "--aws-type", "ml.c6i.xlarge"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"wrote {prices}")
    table = pt.read_price_table(prices)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert (table.version, table.clouds["sagemaker"].retrieved, table.clouds["vertex"].retrieved) == (today,) * 3
    assert prices.read_text() == pt.dump_price_table(table)
    monkeypatch.setattr(pt, "PRICES_FILE", prices)
    assert estimate_cost("sagemaker", "ml.p3.2xlarge", 3600).usd == 3.9
    assert estimate_cost("sagemaker", "ml.c6i.xlarge", 3600).usd == 0.2
    assert estimate_cost("vertex", "n1-standard-4+nvidia-tesla-t4", 3600, spot=True).usd == round(0.0438 + 0.1425, 6)


def test_a_default_region_left_without_prices_is_refused(refresh, prices, tmp_path, capsys):
    folder = tmp_path / "recorded"
    shutil.copytree(RECORDED, folder)
    index = json.loads((folder / "aws" / "region_index.json").read_text())
    del index["regions"]["us-east-1"]
    (folder / "aws" / "region_index.json").write_text(json.dumps(index))
    before = prices.read_text()
    assert refresh.main(["--prices", str(prices), "--recorded", str(folder), "--cloud", "sagemaker"]) == 1
    err = capsys.readouterr().err
    assert "the price list has no region 'us-east-1'" in err
    assert "refresh-prices: the refreshed price table: clouds.sagemaker: " in err
    assert "default_region 'us-east-1' has no entry in regions" in err
    assert prices.read_text() == before


def test_the_api_key_comes_from_the_environment_or_a_connection_never_argv(refresh, monkeypatch):
    monkeypatch.delenv("BILLING_KEY", raising=False)
    with pytest.raises(refresh.RefreshError, match="set BILLING_KEY"):
        refresh.gcp_api_key("BILLING_KEY", None)
    monkeypatch.setenv("BILLING_KEY", "from-env")
    assert refresh.gcp_api_key("BILLING_KEY", None) == "from-env"
    monkeypatch.setenv("AIRFLOW_CONN_BILLING_API", json.dumps({"conn_type": "generic", "extra": {"api_key": "from-conn"}}))
    assert refresh.gcp_api_key("BILLING_KEY", "billing_api") == "from-conn"
    with pytest.raises(SystemExit):
        refresh.main(["--api-key", "secret", "--dry-run"])
