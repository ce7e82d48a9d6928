"""A human approves the promotion, seeing the decision, the champion comparison and every gate."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Param


def approval_body(decision: dict[str, Any]) -> str:
    """The Markdown a reviewer sees in the approval step: the decision, the comparison, every gate."""
    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("–" if v is None else str(v))

    gates = "\n".join(f"| `{g}` | {s} |" for g, s in sorted(decision.get("gates", {}).items()))
    return (
        f"### Promote {decision['model_name']} v{decision['candidate_version']} to champion?\n\n"
        f"**Recommendation:** {decision.get('decision')} — {decision.get('reason')}\n\n"
        f"| | version | {decision.get('primary_metric')} |\n|---|---|---|\n"
        f"| candidate | v{decision['candidate_version']} | {fmt(decision.get('candidate_value'))} |\n"
        f"| champion | {('v' + decision['champion_before']) if decision.get('champion_before') else 'none'} | "
        f"{fmt(decision.get('champion_value'))} |\n\n"
        f"Delta {fmt(decision.get('delta'))} (required {decision.get('min_improvement')}); evidence: "
        f"{decision.get('evidence')}.\n\n| gate | outcome |\n|---|---|\n{gates}\n\n"
        "Approve moves `champion`; Reject (or no answer before the timeout) keeps it. Give a reason."
    )


class PromotionApprovalOperator(ApprovalOperator):
    """Ask a human to approve the promotion, showing the gate evidence and the champion comparison.

    Only asked when the decision proposes a promotion; otherwise it returns at once. The answer is
    returned (never skips downstream): the promote task records a rejection, with its reason, in the
    history. No answer before ``response_timeout`` counts as a rejection (the default option).

    :param decision: the result of :class:`PromoteModelOperator` in ``decide`` mode.
    :return: ``{"approved", "by", "reason", "timed_out", "asked"}``.
    """

    template_fields = (*ApprovalOperator.template_fields, "decision")
    ui_color = "#f9e79f"

    def __init__(self, *, decision: dict[str, Any] | Any, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Approve the promotion?")
        kwargs.setdefault("defaults", [ApprovalOperator.REJECT])
        kwargs.setdefault("params", {"reason": Param("", type="string", description="why you approve or reject")})
        super().__init__(**kwargs)
        self.decision = decision

    def execute(self, context):
        decision = self.decision or {}
        if not decision.get("promote"):
            self.log.info("Nothing to approve: %s (%s)", decision.get("decision"), decision.get("reason"))
            return {"approved": False, "asked": False, "by": None, "timed_out": False,
                    "reason": f"nothing to approve: {decision.get('decision')}"}
        self.subject = (f"Promote {decision['model_name']} v{decision['candidate_version']} to champion "
                        f"(now {('v' + decision['champion_before']) if decision.get('champion_before') else 'none'})?")
        self.body = decision.get("body_md") or approval_body(decision)
        return super().execute(context)

    def execute_complete(self, context, event: dict[str, Any]) -> dict[str, Any]:
        if "error" in event:  # timed out without defaults: a rejection, not a failed task
            self.log.warning("No answer: %s", event.get("error"))
            return {"approved": False, "asked": True, "by": None, "timed_out": True, "reason": "approval timed out"}
        result = HITLOperator.execute_complete(self, context=context, event=event)  # validates; never skips
        chosen = result["chosen_options"][0]
        user = result.get("responded_by_user") or {}
        if not isinstance(user, dict):  # a pydantic HITLUser on some paths, a TypedDict on others
            user = {"id": getattr(user, "id", None), "name": getattr(user, "name", None)}
        timed_out = bool(event.get("timedout"))
        reason = (result.get("params_input") or {}).get("reason") or ""
        if timed_out:
            reason = "approval timed out"
        answer = {"approved": chosen == self.APPROVE and not timed_out, "asked": True,
                  "candidate_version": (self.decision or {}).get("candidate_version"),
                  "champion_before": (self.decision or {}).get("champion_before"),
                  "by": None if timed_out else (user.get("name") or user.get("id")), "timed_out": timed_out,
                  "reason": reason}
        self.log.info("Approval answer: %s", answer)
        return answer
