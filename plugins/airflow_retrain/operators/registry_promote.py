"""Move ``champion`` only to a gated version that wins, under the model's promotion lease.

Every alias move and every promotion decision is appended to the model's promotion history in the
registry (:mod:`airflow_retrain.registry.history`), under the lease (:mod:`airflow_retrain.registry.lease`),
so two runs (of one pipeline, two pipelines sharing a model name, or two Airflow deployments sharing one
registry) never interleave and the champion never points at a version that did not pass its gates.
"""

from __future__ import annotations

import json
import math
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_retrain.hooks.mlflow import LeaseLost, LeaseUnavailable, RegistryError
from airflow_retrain.links.mlflow import MlflowCandidateVersionLink, MlflowChampionVersionLink
from airflow_retrain.monitoring.drift import drift_trigger
from airflow_retrain.operators.registry_approval import approval_body
from airflow_retrain.operators.registry_base import RegistryBaseOperator
from airflow_retrain.registry.tags import CHAMPION, GATE_OUTCOME_TAG, GATE_TAG, TAG
from airflow_retrain.report import trigger_label

#: Decisions that leave the champion where it was: ``promote`` ends *skipped* with the reason.
KEPT_DECISIONS = ("kept_champion", "rejected")


class PromoteModelOperator(RegistryBaseOperator):
    """Move ``champion`` to the candidate only if every gate passed and it beats the champion.

    The whole decision runs under the model's promotion lease: the gate tags and the champion are read
    (again) under it, the lease is verified right before the alias moves, and the decision is appended to
    the promotion history whatever it is (promoted, kept, rejected by a human). The comparison is the
    champion gate's verdict (``comparison``: the champion re-scored on the same holdout) when there is
    one, else the stored primary metric of both runs. A verdict made against another champion than the one
    found under the lease is stale: nothing moves and the task fails, to be rerun. When the champion is
    kept (the candidate does not beat it, or a human rejected it) the task ends *skipped*, the reason in its
    log and the decision in XCom, so the grid tells a kept champion from a promotion and from an error.

    With ``mode="decide"`` nothing is written: the operator returns the decision and a Markdown summary
    for the approval step. With ``approval`` (the result of :class:`PromotionApprovalOperator`) a
    rejection or a timeout is recorded and the champion stays.

    :param candidate: the result of :class:`RegisterModelOperator`.
    :param primary_metric: metric the candidate and the champion are compared on.
    :param greater_is_better: direction of ``primary_metric``.
    :param min_improvement: the candidate must beat the champion by at least this much.
    :param required_gates: gates whose ``retrain.gate.<name>`` tag must read ``passed``.
    :param comparison: the champion gate's verdict dict (``details.decision``, values, versions); ``None``
        to read ``gates/champion.json`` from the candidate's run, else to compare stored metrics.
    :param approval: the approval step's result, or ``None`` when no approval is required.
    :param mode: ``promote`` (default) or ``decide``.
    :param alias: the alias to move.
    :param dry_run_param: the run Param that, when true, makes this a dry run: decide, move and record
        nothing, end skipped with what would have happened.
    :param reason_param: the run Param whose free text is recorded in the history entry (``trigger_reason``).
    :return: the decision, the versions before/after and the compared numbers.
    """

    template_fields = ("candidate", "comparison", "approval")
    operator_extra_links = (MlflowCandidateVersionLink(), MlflowChampionVersionLink())
    ui_color = "#ffd700"

    def __init__(
        self,
        *,
        candidate: dict[str, Any] | Any,
        primary_metric: str,
        greater_is_better: bool = True,
        min_improvement: float = 0.0,
        required_gates: list[str] | None = None,
        comparison: dict[str, Any] | Any = None,
        approval: dict[str, Any] | Any = None,
        mode: str = "promote",
        alias: str = CHAMPION,
        dry_run_param: str | None = None,
        reason_param: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dry_run_param = dry_run_param
        self.reason_param = reason_param
        self._trigger_reason: str | None = None
        self._drift: str | None = None
        if mode not in ("promote", "decide"):
            raise ValueError(f"mode must be 'promote' or 'decide', not {mode!r}")
        self.candidate = candidate
        self.primary_metric = primary_metric
        self.greater_is_better = greater_is_better
        self.min_improvement = min_improvement
        self.required_gates = required_gates or ["metrics"]
        self.comparison = comparison
        self.approval = approval
        self.mode = mode
        self.alias = alias

    def _metric(self, run_id: str, who: str) -> float:
        value = self.hook.run_metrics(run_id).get(self.primary_metric)
        if value is None or not math.isfinite(value):
            self._fail(f"{who} has no finite {self.primary_metric!r} metric in MLflow run {run_id}: cannot compare, "
                       "nothing promoted")
        return float(value)

    def _dry_run(self, context) -> dict[str, Any]:
        """Decide (reading only), move nothing, record nothing: the run trained and gated a candidate."""
        decision = self.decide(context)
        before = decision["champion_before"]
        cand, champ = decision.get("candidate_value"), decision.get("champion_value")
        numbers = (f"{decision['primary_metric']} {cand:.4f} vs {champ:.4f}"
                   if isinstance(cand, int | float) and isinstance(champ, int | float) else decision["reason"])
        would = (f"would be promoted over v{before} ({numbers})" if before else "would become the first champion") \
            if decision.get("promote") else f"would keep v{before}: {numbers}"
        decision.update(decision="dry_run", promote=False, promoted=False, champion_after=before,
                        reason=f"{would} (dry_run: nothing moved)")
        return decision

    def execute(self, context) -> dict[str, Any]:
        params = dict(context.get("params") or {})
        self._trigger_reason = str(params.get(self.reason_param) or "").strip() or None if self.reason_param else None
        # A run the scoring DAG's drift Asset started says so in its history entry (and why).
        self._drift = trigger_label(drift_trigger(context, self.pipeline)) if self.pipeline else None
        if self.mode == "promote" and self.dry_run_param and params.get(self.dry_run_param):
            decision = self._dry_run(context)
            context["ti"].xcom_push(key="return_value", value=decision)
            raise AirflowSkipException(f"dry run: {decision['reason']}")
        try:
            if self.mode == "decide":
                decision = self.decide(context)
                decision["body_md"] = approval_body(decision)
                return decision
            decision = self.promote(context)
        except LeaseUnavailable as e:
            raise AirflowFailException(str(e)) from None
        except RegistryError as e:
            raise RuntimeError(str(e)) from None  # Airflow retries; a retry completes what is missing
        if decision["decision"] in KEPT_DECISIONS:
            # The champion stays: a skipped (not green) promote in the grid, the reason in its log and the
            # decision still in XCom for the report, the notifier and the dashboard.
            context["ti"].xcom_push(key="return_value", value=decision)
            raise AirflowSkipException(f"champion kept: {decision['reason']}")
        return decision

    def _gates_not_passed(self, tags: dict[str, str]) -> dict[str, str]:
        states = {g: tags.get(f"{GATE_TAG}.{g}", "missing") for g in self.required_gates}
        return {g: s for g, s in states.items() if s != "passed"}

    def _comparison(self, run_id: str) -> dict[str, Any] | None:
        if self.comparison:
            return dict(self.comparison)
        if "champion" in self.required_gates:
            return self.hook.load_dict(run_id, "gates/champion.json")
        return None

    def decide(self, context) -> dict[str, Any]:
        """The decision against the current champion; reads only."""
        run = self.run_identity(context)
        name = self.candidate["model_name"]
        version = str(self.candidate["version"])
        mv = self.hook.get_version(name, version)
        not_passed = self._gates_not_passed(mv.tags or {})
        if not_passed:
            self._fail(f"{name} v{version} cannot become {self.alias}: gates not passed {not_passed}")
        champion = self.hook.get_version_by_alias(name, self.alias)
        decision: dict[str, Any] = {
            "model_name": name,
            "candidate_version": version,
            "primary_metric": self.primary_metric,
            "greater_is_better": self.greater_is_better,
            "min_improvement": self.min_improvement,
            "candidate_value": None,
            "champion_before": str(champion.version) if champion is not None else None,
            "champion_value": None,
            "delta": None,
            "evidence": "stored metrics",
            "gates": {k.removeprefix(f"{GATE_TAG}."): v for k, v in (mv.tags or {}).items()
                      if k.startswith(f"{GATE_TAG}.") and k.count(".") == 2},
            "dag_run": f"{run.dag_id}/{run.run_id}",
        }
        if champion is not None and str(champion.version) == version:
            decision.update(promote=False, decision="already_champion", reason=f"v{version} is already {self.alias}")
            return decision
        verdict = self._comparison(mv.run_id)
        if verdict is not None:
            return self._decide_from_verdict(decision, verdict, champion)
        candidate_value = self._metric(mv.run_id, f"candidate {name} v{version}")
        decision["candidate_value"] = candidate_value
        if champion is None:
            decision.update(promote=True, decision="promoted", reason=f"no {self.alias} yet")
            return decision
        champion_value = self._metric(champion.run_id, f"{self.alias} {name} v{champion.version}")
        delta = candidate_value - champion_value if self.greater_is_better else champion_value - candidate_value
        promote = delta >= self.min_improvement and delta > 0
        decision.update(
            champion_value=champion_value, delta=delta, promote=promote,
            decision="promoted" if promote else "kept_champion",
            reason=(f"candidate v{version} {self.primary_metric}={candidate_value:.4f} "
                    f"{'beats' if promote else 'does not beat'} {self.alias} v{champion.version} "
                    f"{self.primary_metric}={champion_value:.4f} by the required {self.min_improvement} "
                    f"(delta {delta:+.4f})"),
        )
        return decision

    def _decide_from_verdict(self, decision: dict[str, Any], verdict: dict[str, Any], champion) -> dict[str, Any]:
        details = verdict.get("details") or verdict
        compared = details.get("champion_version")
        current = str(champion.version) if champion is not None else None
        compared = str(compared) if compared is not None else None
        decision.update(
            evidence=f"champion gate: re-scored on the same holdout ({details.get('holdout_rows', '?')} rows)",
            candidate_value=details.get("candidate_value"), champion_value=details.get("champion_value"),
            delta=details.get("delta"), primary_metric=details.get("metric", self.primary_metric),
        )
        if compared != current:
            self._fail(f"the champion gate compared {decision['model_name']} v{decision['candidate_version']} with "
                       f"{self.alias} v{compared}, but {self.alias} is now v{current}: the comparison is stale, "
                       "nothing promoted; rerun the champion gate")
        outcome = details.get("decision")
        if outcome in ("beats", "no_champion"):
            decision.update(promote=True, decision="promoted", reason=verdict.get("message") or outcome)
        elif outcome == "does_not_beat":
            decision.update(promote=False, decision="kept_champion", reason=verdict.get("message") or outcome)
        elif outcome == "already_champion":
            decision.update(promote=False, decision="already_champion", reason=verdict.get("message") or outcome)
        else:
            self._fail(f"champion gate verdict has no usable decision ({outcome!r}): nothing promoted")
        return decision

    def promote(self, context, max_rounds: int = 5) -> dict[str, Any]:
        """Decide and act under the lease; a lease lost before the alias move (nothing written) means
        deciding again under a fresh lease, up to ``max_rounds`` times."""
        for round_ in range(1, max_rounds + 1):
            try:
                return self._promote_once(context)
            except LeaseLost as e:
                if round_ == max_rounds:
                    raise
                self.log.warning("%s; deciding again (round %d/%d)", e, round_ + 1, max_rounds)
        raise AssertionError("unreachable")

    def _promote_once(self, context) -> dict[str, Any]:
        run = self.run_identity(context)
        name = self.candidate["model_name"]
        version = str(self.candidate["version"])
        holder = f"{run.dag_id}/{run.run_id}/{self.task_id}"
        with self._lease(name, holder) as lease:
            decision = self.decide(context)  # under the lease: gates and champion as they are now
            approval = self.approval or None
            if (decision.get("promote") and approval is not None and approval.get("approved")
                    and approval.get("champion_before", decision["champion_before"]) != decision["champion_before"]):
                approval = {**approval, "approved": False,
                            "reason": f"approved against champion v{approval.get('champion_before')}, but the champion "
                                      f"is now v{decision['champion_before']}: approval is stale"}
            if decision.get("promote") and approval is not None and not approval.get("approved"):
                why = approval.get("reason") or ("approval timed out" if approval.get("timed_out") else "rejected")
                decision.update(promote=False, decision="rejected",
                                reason=f"{decision['reason']}; not approved by {approval.get('by') or 'nobody'}: {why}")
            if decision.get("decision") == "already_champion":
                entry = self._record_unrecorded_move(lease, version, holder, decision)
            elif decision.get("promote"):
                not_passed = self._gates_not_passed(self.hook.get_version(name, version).tags or {})
                if not_passed:  # re-checked right before the move: a gate may have been re-run
                    self._fail(f"{name} v{version}: gates not passed {not_passed}; nothing promoted")
                entry = self.hook.move_alias(lease, self.alias, version, {
                    "action": "promote", "by": holder, "reason": self._entry_reason(decision),
                    "candidate_version": version, "evidence": decision["evidence"],
                    "approved_by": (approval or {}).get("by"), "trigger_reason": self._trigger_reason,
                }, expected_from=decision["champion_before"])
            else:
                entry = self.hook.append_history(lease, {
                    "action": "kept" if decision["decision"] == "kept_champion" else decision["decision"],
                    "alias": self.alias, "from": decision["champion_before"], "to": decision["champion_before"],
                    "by": holder, "reason": self._entry_reason(decision), "candidate_version": version,
                    "trigger_reason": self._trigger_reason,
                })
            after = self.hook.get_version_by_alias(name, self.alias)
            decision["champion_after"] = str(after.version) if after is not None else None
            decision["promoted"] = bool(decision.get("promote")) and decision["champion_after"] == version
            decision["history_seq"] = entry["seq"] if entry else None
            outcome = "passed" if not self._gates_not_passed(self.hook.get_version(name, version).tags or {}) else "failed"
            self.hook.set_version_tags(name, version, {
                GATE_OUTCOME_TAG: outcome,
                f"{TAG}.promotion.decision": decision["decision"],
                f"{TAG}.promotion.reason": decision["reason"][:4000],
                f"{TAG}.promotion.compared_to": decision["champion_before"] or "none",
                f"{TAG}.promotion.dag_run": decision["dag_run"],
            })
        self.hook.log_dict(self.hook.get_version(name, version).run_id, decision, "promotion/decision.json")
        MlflowCandidateVersionLink.persist(context, self.hook.version_url(name, version))
        MlflowChampionVersionLink.persist(context, self.hook.version_url(name, decision["champion_after"] or version))
        self.log.info("%s: %s", decision["decision"], decision["reason"])
        self.log.info("Decision: %s", json.dumps(decision, default=str))
        return decision


    def _entry_reason(self, decision: dict[str, Any]) -> str:
        """The history entry's reason: the decision's, headed by the drift that started the run, if it did."""
        return f"{self._drift}: {decision['reason']}" if self._drift else decision["reason"]

    def _record_unrecorded_move(self, lease, version: str, holder: str, decision: dict[str, Any]):
        """A retry after a failure between the alias move and its history entry writes the missing entry."""
        moves = [e for e in self.hook.promotion_history(lease.model_name) if e.get("alias") == self.alias
                 and e.get("to") != e.get("from")]
        if moves and moves[-1].get("to") == version:
            return None
        self.log.warning("%s@%s is v%s but the history does not say so: recording the move now",
                         lease.model_name, self.alias, version)
        return self.hook.append_history(lease, {
            "alias": self.alias, "from": moves[-1].get("to") if moves else None, "to": version,
            "action": "promote", "by": holder, "candidate_version": version,
            "reason": "recorded by a retry: the alias had moved before the history entry was written",
        })
