"""The one cost model: price table lookup, overrides, unknown prices and rounding."""

from __future__ import annotations

import json

import pytest

from airflow_retrain.cost import PRICE_TABLE, CostEstimate, UnknownPriceError, estimate_cost, hourly_price


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
    }


def test_every_table_price_is_a_non_negative_number():
    for backend, prices in PRICE_TABLE.items():
        assert prices, backend
        for instance_type, price in prices.items():
            assert isinstance(price, float), (backend, instance_type)
            assert price >= 0, (backend, instance_type)
