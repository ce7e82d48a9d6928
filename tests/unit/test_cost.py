"""The one cost model: price table lookup, overrides, unknown prices and rounding."""

from __future__ import annotations

import json

import pytest

from airflow_retrain.cost import (
    PRICE_TABLE,
    PRICE_TABLE_VERSION,
    PRICES,
    CostEstimate,
    UnknownPriceError,
    estimate_cost,
    hourly_price,
    job_cost,
    max_job_cost,
)


def test_table_lookup():
    assert hourly_price("sagemaker", "ml.g5.xlarge") == (1.408, "table")
    assert hourly_price("vertex", "a2-highgpu-1g") == (4.2245, "table")
    assert hourly_price("local", "local") == (0.0, "table")


def test_local_runs_are_free_by_default():
    est = estimate_cost("local", "local", 7200)
    assert est.usd == 0.0
    assert est.hourly_price_usd == 0.0
    assert est.price_source == "table"


def test_estimate_from_table():
    # One hour on two ml.m5.xlarge instances at $0.23 per instance-hour.
    est = estimate_cost("sagemaker", "ml.m5.xlarge", 3600, instance_count=2)
    assert est == CostEstimate(
        backend="sagemaker",
        instance_type="ml.m5.xlarge",
        instance_count=2,
        seconds=3600.0,
        hourly_price_usd=0.23,
        usd=0.46,
        price_source="table",
        region="us-east-1",
        spot=False,
        training_seconds=3600.0,
        on_demand_usd=0.46,
        spot_savings_usd=0.0,
        gpus=0,  # a CPU instance type, per the SageMaker catalog
    )


def test_override_wins_over_table():
    est = estimate_cost("sagemaker", "ml.m5.xlarge", 1800, hourly_price_usd=10)
    assert est.hourly_price_usd == 10.0
    assert isinstance(est.hourly_price_usd, float)
    assert est.usd == 5.0
    assert est.price_source == "override"


def test_override_prices_local_machine():
    est = estimate_cost("local", "local", 900, hourly_price_usd=2.0)
    assert est.usd == 0.5
    assert est.price_source == "override"


def test_override_of_zero_is_respected():
    # 0 is a real override (e.g. prepaid capacity), not "no override".
    est = estimate_cost("sagemaker", "ml.p4d.24xlarge", 3600, hourly_price_usd=0)
    assert est.usd == 0.0
    assert est.price_source == "override"


def test_override_allows_unknown_instance_type():
    est = estimate_cost("sagemaker", "ml.trn1.32xlarge", 3600, hourly_price_usd=21.5)
    assert est.usd == 21.5


def test_unknown_instance_type_raises_naming_it():
    with pytest.raises(UnknownPriceError, match=r"ml\.nope\.xlarge"):
        estimate_cost("sagemaker", "ml.nope.xlarge", 60)
    with pytest.raises(UnknownPriceError, match="hourly_price_usd"):
        hourly_price("sagemaker", "ml.nope.xlarge")


def test_unknown_backend_raises():
    with pytest.raises(UnknownPriceError, match=r"azureml instance type 'Standard_NC6'"):
        estimate_cost("azureml", "Standard_NC6", 60)


def test_unknown_price_error_is_a_key_error():
    # Callers that catch KeyError for "not in the table" keep working.
    assert issubclass(UnknownPriceError, KeyError)


def test_rounding():
    # 1 s on a $0.23/h machine = 0.0000638888... USD -> 6 decimals; seconds -> 3 decimals.
    est = estimate_cost("sagemaker", "ml.m5.xlarge", 1.23456789)
    assert est.seconds == 1.235
    assert est.usd == round(1.23456789 / 3600 * 0.23, 6) == 0.000079
    tiny = estimate_cost("sagemaker", "ml.m5.xlarge", 0.001)
    assert tiny.usd == 0.0


def test_negative_seconds_clamp_to_zero():
    est = estimate_cost("sagemaker", "ml.p3.2xlarge", -5)
    assert est.seconds == 0.0
    assert est.usd == 0.0


def test_to_dict_is_json_able():
    data = estimate_cost("vertex", "n1-standard-4", 3600).to_dict()
    assert json.loads(json.dumps(data)) == {
        "backend": "vertex",
        "instance_type": "n1-standard-4",
        "instance_count": 1,
        "seconds": 3600.0,
        "hourly_price_usd": 0.2185,
        "usd": 0.2185,
        "price_source": "table",
        "region": "us-central1",
        "spot": False,
        "training_seconds": 3600.0,
        "on_demand_usd": 0.2185,
        "spot_savings_usd": 0.0,
        "price_table_version": PRICE_TABLE_VERSION,
        "gpus": 0,
    }


def test_every_table_price_is_a_non_negative_number():
    for backend, prices in PRICE_TABLE.items():
        assert prices, backend
        for instance_type, price in prices.items():
            assert isinstance(price, float), (backend, instance_type)
            assert price >= 0, (backend, instance_type)


def test_versioned_table_is_keyed_by_region_with_two_columns():
    for backend, regions in PRICES.items():
        for region, types in regions.items():
            for instance_type, (on_demand, spot) in types.items():
                assert 0 <= spot <= on_demand, (backend, region, instance_type)
    assert hourly_price("sagemaker", "ml.m5.xlarge", region="eu-west-1") == (0.256, "table")
    with pytest.raises(UnknownPriceError, match=r"ml\.m5\.xlarge.*'ap-south-1'.*2026-11"):
        hourly_price("sagemaker", "ml.m5.xlarge", region="ap-south-1")


def test_sagemaker_spot_savings_come_from_billable_vs_training_seconds():
    # Managed spot: 1 h trained, 0.3 h billed at the on-demand rate, on 2 instances.
    est = estimate_cost("sagemaker", "ml.g5.xlarge", 1080, 2, spot=True, training_seconds=3600)
    assert est.usd == round(0.3 * 2 * 1.408, 6)
    assert est.on_demand_usd == round(2 * 1.408, 6)
    assert est.spot_savings_usd == round(0.7 * 2 * 1.408, 6)


def test_vertex_spot_uses_the_spot_rate():
    est = estimate_cost("vertex", "a2-highgpu-1g", 3600, spot=True)
    assert (est.usd, est.on_demand_usd, est.spot_savings_usd) == (1.2674, 4.2245, round(4.2245 - 1.2674, 6))


def test_job_cost_reports_unknown_price_without_failing(caplog):
    est = job_cost("local", "ml.g5.xlarge", 120)
    assert (est.usd, est.hourly_price_usd, est.price_source, est.known) == (None, None, "unknown", False)
    assert est.seconds == 120.0
    assert "ml.g5.xlarge" in caplog.text
    assert json.loads(json.dumps(est.to_dict()))["usd"] is None


def test_max_job_cost_is_price_times_instances_times_runtime():
    assert max_job_cost("sagemaker", "ml.p3.2xlarge", 2, 7200).usd == round(2 * 2 * 3.825, 6)
