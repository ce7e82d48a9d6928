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


# --- issue 5, item 2: a metric is a finite real number, or the gate fails closed ------------------

NON_NUMBERS = [
    True,
    False,
    "0.9",
    "nan",
    "",
    math.nan,
    math.inf,
    -math.inf,
    None,
    {"value": 0.9},
    [0.9],
    10**400,  # an int no float can hold
]


@pytest.mark.parametrize("value", NON_NUMBERS, ids=repr)
def test_gate_fails_closed_on_every_non_finite_or_non_numeric_shape(value):
    v = MetricThresholdGate({"roc_auc": {"min": 0.5}}).evaluate({"roc_auc": value})
    assert not v.passed
    assert "metric 'roc_auc' is not a finite number" in v.message
    assert v.checks[0].observed is None


@pytest.mark.parametrize("value", [0.9, 1, 0, -0.0, 1e-300])
def test_gate_accepts_finite_reals(value):
    v = MetricThresholdGate({"m": {"min": -1.0, "max": 2.0}}).evaluate({"m": value})
    assert v.passed and v.checks[0].observed == float(value)


def test_numpy_scalars_are_numbers_and_numpy_nan_is_not():
    np = pytest.importorskip("numpy")
    gate = MetricThresholdGate({"m": {"min": 0.0}})
    assert gate.evaluate({"m": np.float32(0.5)}).passed
    assert gate.evaluate({"m": np.int64(1)}).passed
    assert not gate.evaluate({"m": np.float64("nan")}).passed
    assert not gate.evaluate({"m": np.bool_(True)}).passed
    assert not gate.evaluate({"m": np.array([0.5])}).passed


@pytest.mark.parametrize(
    "raw",
    ['true', 'false', '"0.9"', 'NaN', 'Infinity', '-Infinity', 'null', '{"v": 0.9}', '[0.9]', '1' + '0' * 400],
)
def test_training_metrics_json_keeps_only_finite_reals(tmp_path, raw):
    """``metrics.json`` as a script writes it: ``"roc_auc": true`` must not become 1.0 and pass the gate."""
    from airflow_retrain.operators.training import TrainModelOperator
    from airflow_retrain.training.base import JobState, TrainingJob

    path = tmp_path / "metrics.json"
    path.write_text('{"metrics": {"roc_auc": ' + raw + ', "accuracy": 0.8, "count": 3}}')
    job = TrainingJob(job_name="j-1", backend="local", state=JobState.COMPLETED)
    metrics = TrainModelOperator._read_metrics(job, path)["metrics"]
    assert metrics == {"roc_auc": None, "accuracy": 0.8, "count": 3.0}
    verdict = MetricThresholdGate({"roc_auc": {"min": 0.5}, "accuracy": {"min": 0.5}}).evaluate(metrics)
    assert not verdict.passed
    assert "metric 'roc_auc' is not a finite number" in verdict.message
