"""Data gates with crafted data: schema, row-count band, nulls, label balance, PSI/KS drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from airflow_retrain.gates.base import evidence_table, verdict_metrics
from airflow_retrain.gates.data import (
    DataEvidence,
    DataGate,
    DataGateConfig,
    column_psi,
    profile_table,
    read_split,
)

CONTRACT = {"customer_id": "varchar", "churned": "integer", "tenure": "integer", "charges": "double precision",
            "plan": "varchar"}


def make_frame(n: int = 2000, seed: int = 0, charges_mean: float = 60.0, churn_rate: float = 0.25,
               plan_p=(0.5, 0.3, 0.2)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "customer_id": [f"C{i:05d}" for i in range(n)],
        "churned": (rng.random(n) < churn_rate).astype("int32"),
        "tenure": rng.integers(0, 72, n).astype("int32"),
        "charges": rng.normal(charges_mean, 15.0, n),
        "plan": rng.choice(["monthly", "yearly", "two_year"], size=n, p=list(plan_p)),
    })


def evidence(frame, *, previous=None, previous_rows=None, snapshot=None) -> DataEvidence:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    profile = profile_table(table, target_column="churned", id_column="customer_id")
    return DataEvidence(frame=frame, train=frame, profile=profile, target_column="churned", id_column="customer_id",
                        previous=previous, previous_rows=previous_rows, snapshot=snapshot,
                        snapshot_source="test snapshot" if snapshot else None)


def snapshot_of(frame) -> dict:
    return profile_table(pa.Table.from_pandas(frame, preserve_index=False), target_column="churned",
                         id_column="customer_id")


def check(verdict, name):
    return next(c for c in verdict.checks if c.name == name)


def test_snapshot_is_statistics_not_data():
    frame = make_frame()
    snap = snapshot_of(frame)
    assert snap["rows"] == 2000 and 0.2 < snap["label_rate"] < 0.3
    assert snap["columns"]["charges"]["kind"] == "numeric"
    assert len(snap["columns"]["charges"]["quantiles"]) == 201
    assert abs(sum(snap["columns"]["charges"]["bins"]["freq"]) - 1) < 1e-9
    assert snap["columns"]["plan"]["kind"] == "categorical"
    assert set(snap["columns"]["plan"]["levels"]) == {"monthly", "yearly", "two_year"}
    assert snap["columns"]["customer_id"]["kind"] == "id"
    assert snap["schema"]["tenure"] == "int32"
    assert "C00001" not in str(snap)  # no row values are stored


def test_drift_that_must_pass():
    reference = make_frame(seed=1)
    new = make_frame(seed=2)  # same distributions, other rows
    cfg = DataGateConfig(psi_max=0.1, ks_max=0.1, on_missing_snapshot="fail")
    verdict = DataGate(cfg).evaluate(evidence(new, snapshot=snapshot_of(reference)))
    assert verdict.passed, verdict.message
    assert check(verdict, "psi.charges").observed < 0.05
    assert check(verdict, "ks.charges").observed < 0.06
    assert {c.name for c in verdict.checks} >= {"psi.tenure", "psi.plan", "ks.tenure", "ks.charges"}
    assert not any(c.name == "ks.plan" for c in verdict.checks)  # KS only for numeric features


def test_drift_that_must_fail_names_feature_number_and_threshold():
    reference = make_frame(seed=1)
    new = make_frame(seed=2, charges_mean=80.0, plan_p=(0.1, 0.2, 0.7))
    cfg = DataGateConfig(psi_max=0.2, ks_max=0.1, on_missing_snapshot="fail")
    verdict = DataGate(cfg).evaluate(evidence(new, snapshot=snapshot_of(reference)))
    assert not verdict.passed
    failed = {c.name for c in verdict.failed_checks}
    assert failed == {"psi.charges", "ks.charges", "psi.plan"}
    assert check(verdict, "psi.charges").observed > 1.0
    assert "PSI of charges" in verdict.message and "> max 0.2" in verdict.message
    assert "KS D of charges" in verdict.message and "> max 0.1" in verdict.message
    assert verdict_metrics(verdict)["gate.data.psi.charges"] > 1.0


@pytest.mark.parametrize("policy", ["warn", "fail"])
def test_a_drift_triggered_retrain_records_drift_and_fails_only_when_told(policy):
    """The monitor requested this retrain because the data moved: with ``on_drift_trigger: warn`` (the
    default) the drift is recorded with its numbers and passes saying why; ``fail`` holds it to the bound."""
    reference = make_frame(seed=1)
    new = make_frame(seed=2, charges_mean=80.0, plan_p=(0.1, 0.2, 0.7))
    cfg = DataGateConfig(psi_max=0.2, ks_max=0.1, on_missing_snapshot="fail", on_drift_trigger=policy)
    ev = evidence(new, snapshot=snapshot_of(reference))
    ev.drift_trigger = "PSI charges 1.3 > 0.2"
    verdict = DataGate(cfg).evaluate(ev)
    assert check(verdict, "psi.charges").observed > 1.0  # measured either way
    if policy == "fail":
        assert not verdict.passed and {c.name for c in verdict.failed_checks} == {"psi.charges", "ks.charges", "psi.plan"}
    else:
        assert verdict.passed, verdict.message
        assert "> max 0.2; allowed: a drift-triggered retrain (gates.data.drift.on_drift_trigger: warn)" in (
            check(verdict, "psi.charges").reason)
    assert not DataGate(cfg).evaluate(evidence(new, snapshot=snapshot_of(reference))).passed  # a cron run fails


def test_a_drift_triggered_retrain_still_fails_a_feature_it_cannot_measure():
    reference = make_frame(seed=1)
    new = make_frame(seed=2).drop(columns=["charges"])
    ev = evidence(new, snapshot=snapshot_of(reference))
    ev.drift_trigger = "PSI charges 1.3 > 0.2"
    verdict = DataGate(DataGateConfig(psi_max=0.2, on_missing_snapshot="fail", match_previous=False)).evaluate(ev)
    assert "psi.charges" in {c.name for c in verdict.failed_checks}
    assert "'charges' is missing from the new data" in verdict.message


def test_psi_counts_unseen_levels_and_nulls():
    reference = snapshot_of(make_frame(seed=1))["columns"]["plan"]
    assert column_psi(reference, pd.Series(["monthly"] * 50 + ["yearly"] * 30 + ["two_year"] * 20)) < 0.01
    shifted = column_psi(reference, pd.Series(["lifetime"] * 50 + ["yearly"] * 30 + [None] * 20))
    assert shifted > 1.0


@pytest.mark.parametrize("policy", ["pass", "fail"])
def test_no_snapshot_yet_follows_the_spec(policy):
    cfg = DataGateConfig(psi_max=0.2, on_missing_snapshot=policy)
    verdict = DataGate(cfg).evaluate(evidence(make_frame()))
    c = check(verdict, "drift.snapshot")
    assert verdict.passed is (policy == "pass") and c.passed is (policy == "pass")
    assert f"on_missing_snapshot: {policy}" in c.reason


def test_schema_mismatch_against_contract_and_previous_run():
    frame = make_frame()
    frame["charges"] = frame["charges"].round().astype("int64")  # contract: double precision
    frame = frame.drop(columns=["plan"]).assign(extra=1)
    previous = snapshot_of(make_frame())
    verdict = DataGate(DataGateConfig(contract=CONTRACT)).evaluate(evidence(frame, previous=previous))
    assert not verdict.passed
    contract_problems = verdict.details["schema_contract_problems"]
    assert "missing column 'plan'" in contract_problems
    assert any("'charges' is int64 (int), contract says double precision (float)" in p for p in contract_problems)
    assert "column 'extra' is not in the contract" in contract_problems
    previous_problems = verdict.details["schema_previous_problems"]
    assert "column 'plan' removed" in previous_problems and "column 'extra' added" in previous_problems
    assert "'charges' changed type double -> int64" in previous_problems


def test_schema_matches_contract_and_first_run_skips_previous():
    verdict = DataGate(DataGateConfig(contract=CONTRACT)).evaluate(evidence(make_frame()))
    assert verdict.passed, verdict.message
    assert check(verdict, "schema.previous").reason.startswith("skipped: no previous run")


@pytest.mark.parametrize(("rows", "previous", "ok"), [(2000, 2100, True), (2000, 3000, False), (2000, None, True)])
def test_row_count_band(rows, previous, ok):
    cfg = DataGateConfig(min_rows=100, max_row_change=0.2)
    verdict = DataGate(cfg).evaluate(evidence(make_frame(rows), previous_rows=previous))
    assert verdict.passed is ok
    band = check(verdict, "rows.change")
    if previous == 3000:
        assert band.observed == pytest.approx(1 / 3) and "change 33.3% > max 20.0%" in band.reason


def test_too_few_rows():
    verdict = DataGate(DataGateConfig(min_rows=5000)).evaluate(evidence(make_frame(2000)))
    assert not verdict.passed and "2000 rows < min 5000" in verdict.message


def test_null_rates_default_and_per_column():
    frame = make_frame()
    frame.loc[:99, "charges"] = np.nan  # 5 %
    loose = DataGateConfig(max_null_rate=0.0, null_rate_columns={"charges": 0.06})
    assert DataGate(loose).evaluate(evidence(frame)).passed
    strict = DataGate(DataGateConfig(max_null_rate=0.0)).evaluate(evidence(frame))
    assert not strict.passed
    assert [c.name for c in strict.failed_checks] == ["null_rate.charges"]
    assert "charges null rate 5.00% > 0.00% (gates.data.max_null_rate.default)" in strict.message


def test_a_first_run_has_no_null_limit_the_spec_did_not_state():
    """A new model's feature 8.5 % null, no champion yet: the defaults set no absolute limit (was 5 %)."""
    from airflow_retrain.spec.models import DataGateSpec

    frame = make_frame()
    frame.loc[: int(0.085 * len(frame)) - 1, "charges"] = np.nan
    verdict = DataGate(DataGateConfig.from_spec(DataGateSpec(), min_rows=100)).evaluate(evidence(frame))
    assert verdict.passed, verdict.message
    assert "skipped: no champion training snapshot to compare null rates with" in check(verdict, "null_rate_increase").reason


def test_a_null_rate_that_rises_over_the_champions_snapshot_names_column_value_and_field():
    from airflow_retrain.spec.models import DataGateSpec

    before = make_frame(seed=1)
    before.loc[:59, "charges"] = np.nan  # 3 % in the champion's training data
    now = make_frame(seed=2)
    now.loc[:239, "charges"] = np.nan  # 12 % now
    config = DataGateConfig.from_spec(DataGateSpec(), min_rows=100)
    verdict = DataGate(config).evaluate(evidence(now, snapshot=snapshot_of(before)))
    assert [c.name for c in verdict.failed_checks] == ["null_rate_increase.charges"]
    assert ("charges null rate 12.00% vs 3.00% in the champion's training snapshot: rise +9.00% > 5.00% "
            "(gates.data.max_null_rate.max_increase)") in verdict.message  # fmt: skip
    assert DataGate(config).evaluate(evidence(before, snapshot=snapshot_of(now))).passed  # a fall is fine


def test_schema_against_the_champions_snapshot():
    from airflow_retrain.spec.models import DataGateSpec

    config = DataGateConfig.from_spec(DataGateSpec(), min_rows=100)
    verdict = DataGate(config).evaluate(evidence(make_frame().drop(columns=["plan"]), snapshot=snapshot_of(make_frame())))
    assert not verdict.passed
    assert "schema differs from the champion's training snapshot (test snapshot) (gates.data.schema.match_champion): " \
           "column 'plan' removed" in check(verdict, "schema.champion").reason


def test_without_an_enforced_contract_the_contract_check_is_skipped_saying_why():
    note = "dbt model 'm' has no enforced contract (config contract.enforced is not true; its YAML documents 2 column(s)"
    verdict = DataGate(DataGateConfig(match_contract=True, contract_note=note)).evaluate(evidence(make_frame()))
    assert verdict.passed
    assert check(verdict, "schema.contract").reason == f"skipped: {note}"
    assert verdict.details["schema_contract_skipped"] == note


def test_a_spec_column_the_data_lacks_names_the_spec_field():
    verdict = DataGate(DataGateConfig(null_rate_columns={"income": 0.1})).evaluate(evidence(make_frame()))
    assert not verdict.passed
    assert "gates.data.max_null_rate.columns.income: the dataset has no column 'income'" in verdict.message


@pytest.mark.parametrize(("rate", "ok"), [(0.25, True), (0.02, False), (0.7, False)])
def test_label_balance(rate, ok):
    cfg = DataGateConfig(label_rate_min=0.1, label_rate_max=0.5)
    verdict = DataGate(cfg).evaluate(evidence(make_frame(churn_rate=rate)))
    assert verdict.passed is ok
    assert check(verdict, "label_rate").observed == pytest.approx(rate, abs=0.03)


def test_evidence_table_has_one_row_per_check():
    cfg = DataGateConfig(min_rows=100, label_rate_min=0.1, psi_max=0.2, on_missing_snapshot="pass")
    table = evidence_table([DataGate(cfg).evaluate(evidence(make_frame()))])
    lines = table.splitlines()
    assert [cell.strip() for cell in lines[0].split(" | ")] == ["gate", "check", "observed", "threshold", "result"]
    assert any(line.startswith("data") and "label_rate" in line and ">= 0.1" in line and "PASS" in line for line in lines)
    assert any("drift.snapshot" in line and "SKIP" in line for line in lines)


@pytest.mark.slow
def test_read_split_accepts_folder_and_uri(tmp_path):
    frame = make_frame(50)
    (tmp_path / "train").mkdir()
    frame.iloc[:20].to_parquet(tmp_path / "train" / "part-0000.parquet", index=False)
    frame.iloc[20:].to_parquet(tmp_path / "train" / "part-0001.parquet", index=False)
    assert read_split(str(tmp_path / "train")).num_rows == 50
    assert read_split((tmp_path / "train").as_uri()).num_rows == 50
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.parquet files"):
        read_split(str(tmp_path / "empty"))


def test_evidence_table_shows_a_champion_not_beaten_as_a_decision_not_a_failure():
    from airflow_retrain.gates.base import Check, Verdict

    check = Check("roc_auc", 0.84, 0.845, None, False, "does not beat")
    champion = Verdict("champion", False, "champion gate failed: does not beat", [check])
    assert evidence_table([champion]).splitlines()[-1].endswith("| FAIL")
    assert evidence_table([champion], advisory=["champion"]).splitlines()[-1].endswith("| NOT BETTER")
