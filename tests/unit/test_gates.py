"""MetricThresholdGate fails closed and says which metric decided."""

from __future__ import annotations

import math

import pytest

from airflow_retrain.gates import Verdict
from airflow_retrain.gates.metrics import MetricThresholdGate

THRESHOLDS = {"roc_auc": {"min": 0.8}, "log_loss": {"max": 0.5}, "accuracy": {"min": 0.7, "max": 1.0}}


def test_passes_within_bounds():
    v = MetricThresholdGate(THRESHOLDS).evaluate({"roc_auc": 0.84, "log_loss": 0.43, "accuracy": 0.8, "f1": 0.1})
    assert v.passed
    assert v.numbers == {"roc_auc": 0.84, "log_loss": 0.43, "accuracy": 0.8}
    assert v.thresholds["accuracy"] == {"min": 0.7, "max": 1.0}
    assert v.message.startswith("metric gate passed")


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"roc_auc": 0.79, "log_loss": 0.43, "accuracy": 0.8}, "roc_auc 0.7900 < min 0.8"),
        ({"roc_auc": 0.84, "log_loss": 0.51, "accuracy": 0.8}, "log_loss 0.5100 > max 0.5"),
        ({"log_loss": 0.43, "accuracy": 0.8}, "metric 'roc_auc' is missing"),
        ({"roc_auc": math.nan, "log_loss": 0.43, "accuracy": 0.8}, "metric 'roc_auc' is not a finite number (nan)"),
        ({"roc_auc": None, "log_loss": 0.43, "accuracy": 0.8}, "metric 'roc_auc' is not a finite number (None)"),
        ({"roc_auc": "high", "log_loss": 0.43, "accuracy": 0.8}, "metric 'roc_auc' is not a finite number ('high')"),
        ({"roc_auc": math.inf, "log_loss": 0.43, "accuracy": 0.8}, "metric 'roc_auc' is not a finite number (inf)"),
        ({"roc_auc": True, "log_loss": 0.43, "accuracy": 0.8}, "metric 'roc_auc' is not a finite number (True)"),
    ],
)
def test_fails_closed_naming_the_metric(metrics, expected):
    v = MetricThresholdGate(THRESHOLDS).evaluate(metrics)
    assert not v.passed
    assert expected in v.message
    assert v.message.startswith("metric gate failed")


def test_every_failure_is_listed():
    v = MetricThresholdGate(THRESHOLDS).evaluate({})
    assert not v.passed
    assert [c.name for c in v.checks if not c.passed] == ["roc_auc", "log_loss", "accuracy"]


def test_verdict_round_trips_through_json_shapes():
    v = MetricThresholdGate(THRESHOLDS).evaluate({"roc_auc": 0.9, "log_loss": 0.2, "accuracy": 0.9})
    again = Verdict.from_dict(v.to_dict())
    assert again == v


def test_needs_thresholds():
    with pytest.raises(ValueError):
        MetricThresholdGate({})
