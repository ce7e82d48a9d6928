"""Model gates with crafted scores: champion comparison, slices, efficiency, fail-closed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from airflow_retrain.gates.model import (
    ChampionGate,
    EfficiencyEvidence,
    EfficiencyGate,
    ScoredHoldout,
    SliceGate,
    score,
)

RNG = np.random.default_rng(7)
N = 600
LABELS = (RNG.random(N) < 0.3).astype(int)
GOOD = np.clip(LABELS * 0.6 + RNG.random(N) * 0.5, 0, 1)  # separates the classes well
WEAK = np.clip(LABELS * 0.1 + RNG.random(N) * 0.9, 0, 1)  # barely
FRAME = pd.DataFrame({"contract": np.where(np.arange(N) % 3 == 0, "two_year", "monthly"),
                      "tenure": RNG.integers(0, 72, N)})


def holdout(candidate, champion=None, **kw) -> ScoredHoldout:
    return ScoredHoldout(labels=LABELS, candidate=candidate, champion=champion, frame=FRAME,
                         candidate_version="2", champion_version="1" if champion is not None else None, **kw)


def test_scores_match_sklearn_definitions():
    from sklearn.metrics import log_loss, roc_auc_score

    assert score("roc_auc", LABELS, GOOD) == pytest.approx(roc_auc_score(LABELS, GOOD))
    assert score("log_loss", LABELS, GOOD) == pytest.approx(log_loss(LABELS, GOOD))
    assert score("roc_auc", [1, 1, 1], [0.2, 0.5, 0.9]) is None  # one class: undefined, not NaN
    with pytest.raises(ValueError, match="cannot be computed"):
        score("ndcg", LABELS, GOOD)


def test_no_champion_yet_passes_explicitly():
    verdict = ChampionGate("roc_auc", 0.002).evaluate(holdout(GOOD))
    assert verdict.passed
    assert verdict.details["decision"] == "no_champion"
    assert "no champion yet" in verdict.message


def test_candidate_beats_champion_on_the_same_holdout():
    verdict = ChampionGate("roc_auc", 0.01).evaluate(holdout(GOOD, WEAK, champion_stored_value=0.99))
    assert verdict.passed and verdict.details["decision"] == "beats"
    d = verdict.details
    assert d["candidate_value"] > d["champion_value"] and d["delta"] == pytest.approx(
        d["candidate_value"] - d["champion_value"]
    )
    assert d["champion_stored_value"] == 0.99  # shown, never compared
    assert "re-scored on the same holdout (600 rows)" in verdict.message


def test_candidate_not_better_by_the_margin_fails_with_numbers():
    verdict = ChampionGate("roc_auc", 0.01).evaluate(holdout(WEAK, GOOD))
    assert not verdict.passed and verdict.details["decision"] == "does_not_beat"
    assert "does not beat champion v1" in verdict.message and "by the required 0.01" in verdict.message
    equal = ChampionGate("roc_auc", 0.0).evaluate(holdout(GOOD, GOOD.copy()))
    assert not equal.passed and equal.details["delta"] == 0.0  # equal never replaces


def test_lower_is_better_metric_direction():
    verdict = ChampionGate("log_loss", 0.0).evaluate(holdout(GOOD, WEAK))
    assert verdict.passed and verdict.details["greater_is_better"] is False
    assert verdict.details["delta"] > 0


@pytest.mark.parametrize("bad", [np.full(N, np.nan), np.array([math.inf] * N)])
def test_nan_scores_fail_closed(bad):
    cand = ChampionGate("roc_auc").evaluate(holdout(bad))
    assert not cand.passed and cand.details["decision"] == "error"
    assert "not a finite number" in cand.message
    champ = ChampionGate("roc_auc").evaluate(holdout(GOOD, bad))
    assert not champ.passed and champ.details["decision"] == "error"


def test_champion_that_cannot_be_loaded_fails_closed():
    verdict = ChampionGate("roc_auc").evaluate(
        ScoredHoldout(labels=LABELS, candidate=GOOD, champion_version="1", champion_error="cannot be loaded: boom")
    )
    assert not verdict.passed and verdict.details["decision"] == "error"
    assert "champion v1: cannot be loaded: boom" in verdict.message


def test_regressing_slice_fails_and_names_it():
    # The candidate is better overall but much worse on two_year customers.
    two_year = FRAME["contract"].to_numpy() == "two_year"
    candidate = np.where(two_year, WEAK, GOOD)
    verdict = SliceGate(["contract"], "roc_auc", max_regression=0.02).evaluate(holdout(candidate, GOOD))
    assert not verdict.passed
    failed = [c.name for c in verdict.failed_checks]
    assert failed == ["contract=two_year.roc_auc.regression"]
    assert "contract=two_year (200 rows)" in verdict.message and "> max 0.02" in verdict.message
    ok = SliceGate(["contract"], "roc_auc", max_regression=0.02).evaluate(holdout(GOOD, candidate))
    assert ok.passed


def test_slices_of_a_numeric_column_are_quartiles_and_small_slices_are_skipped():
    verdict = SliceGate(["tenure"], "roc_auc", 0.05, min_rows=200).evaluate(holdout(GOOD, GOOD))
    assert len(verdict.checks) == 4
    assert all(c.passed and c.reason.startswith("skipped") for c in verdict.checks)
    missing = SliceGate(["region"], "roc_auc", 0.05).evaluate(holdout(GOOD, GOOD))
    assert not missing.passed and "slice column 'region' is not in the holdout" in missing.message


def test_slices_without_champion_record_values():
    verdict = SliceGate(["contract"], "roc_auc", 0.02).evaluate(holdout(GOOD))
    assert verdict.passed
    assert {s["slice"] for s in verdict.details["slices"]} == {"contract=monthly", "contract=two_year"}


def test_efficiency_budget():
    ok = EfficiencyGate(max_model_mb=1, max_latency_ms=50).evaluate(EfficiencyEvidence(200_000, 12.0, 1000))
    assert ok.passed
    slow = EfficiencyGate(max_model_mb=1, max_latency_ms=50).evaluate(EfficiencyEvidence(3 * 2**20, 80.0, 1000))
    assert not slow.passed
    assert "model size 3 MiB > max 1 MiB" in slow.message
    assert "batch scoring latency (1000 rows) 80 ms > max 50 ms" in slow.message
    broken = EfficiencyGate(max_latency_ms=50).evaluate(EfficiencyEvidence(100, None, 1000, error="ValueError: x"))
    assert not broken.passed and "could not be measured: ValueError: x" in broken.message
