"""One sweep: list every place's resources, judge them, mark, wait out the grace, re-check, act.

The rules (Cloud Custodian's mark-for-op, plus a claim so two sweeps never both act):

1. Out of scope (untagged while ``scope: tagged``) or kind disabled: not looked at further.
   Exempt (``retrain:keep=true``): never marked or acted on; the one write the sweep may make on an exempt
   resource is removing its *own* earlier mark, so lifting the exemption later starts a fresh grace.
2. Not idle: nothing to do; if it carries our mark, the mark is removed ("busy again").
3. Idle, unmarked: marked ``retrain:teardown-planned = <action>@<epoch>``.
4. Idle, marked, grace not over: waits.
5. Idle, marked, grace over: claim (``retrain:teardown-claim = <sweep id>``), wait ``claim_settle_seconds``,
   read the resource again; act only if it still runs, still carries the same mark, the claim is still
   ours and it is still idle. Otherwise skip (another sweep has it) or unmark (busy again).
6. ``dry_run``: steps 2-5 are only reported ("would mark", ...); nothing is written.
7. Action ``report``: recorded every sweep, never marked, never acted on.

A resource that disappears, or an API error on one resource (a permission error), is recorded and the
sweep goes on; an inventory that cannot list at all is recorded as an error of its place.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_retrain.cost import UnknownPriceError, estimate_cost, gpus_per_instance
from airflow_retrain.teardown.base import Clock, Finding, Inventory, Mark, Resource, ResourceGone

# Outcomes that changed something (or would have, in a dry run).
ACTED, MARKED, UNMARKED = "acted", "marked", "unmarked"


@dataclass
class SweepRecord:
    """What the sweep decided about one resource, with the evidence (one row of the task-log table)."""

    kind: str
    resource: str
    location: str
    outcome: str
    reason: str
    action: str | None = None
    detail: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    pipeline: str | None = None
    owner: str | None = None
    backend: str = ""
    instance_type: str | None = None
    instance_count: int = 1
    uptime_seconds: float = 0.0
    usd_uptime: float | None = None
    saving_usd_per_hour: float | None = None
    gpu_hours: float = 0.0
    at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SweepResult:
    sweep_id: str
    started_at: float
    dry_run: bool
    records: list[SweepRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seen: int = 0
    out_of_scope: int = 0
    api_calls: int = 0
    seconds: float = 0.0

    def by_outcome(self, outcome: str) -> list[SweepRecord]:
        return [r for r in self.records if r.outcome == outcome]

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for record in self.records:
            counts[record.outcome] = counts.get(record.outcome, 0) + 1
        return {
            "sweep_id": self.sweep_id,
            "dry_run": self.dry_run,
            "seen": self.seen,
            "out_of_scope": self.out_of_scope,
            "outcomes": counts,
            "saving_usd_per_hour": round(sum(r.saving_usd_per_hour or 0 for r in self.by_outcome(ACTED)), 6),
            "errors": self.errors,
            "notes": self.notes,
            "api_calls": self.api_calls,
            "seconds": round(self.seconds, 3),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "records": [r.to_dict() for r in self.records]}


def resource_usd(resource: Resource, seconds: float) -> float | None:
    """What ``seconds`` of the resource cost by the package's one cost model; ``None`` without a price."""
    variants = resource.details.get("variant_instances")
    region = resource.details.get("region")
    try:
        if variants:
            return round(
                sum(estimate_cost(resource.backend, t, seconds, int(n), region=region).usd for t, n in variants), 6
            )
        if not resource.instance_type:
            return None
        return estimate_cost(
            resource.backend, resource.instance_type, seconds, resource.instance_count, region=region
        ).usd
    except UnknownPriceError:
        return None


def hourly_usd(resource: Resource) -> float | None:
    """The resource's burn rate: what stopping it saves per hour."""
    return resource_usd(resource, 3600.0)


def resource_gpu_hours(resource: Resource, seconds: float) -> float:
    variants = resource.details.get("variant_instances") or [[resource.instance_type, resource.instance_count]]
    gpus = resource.details.get("gpus") or sum(gpus_per_instance(resource.backend, t) * int(n) for t, n in variants)
    return round(seconds * gpus / 3600.0, 6)


class Sweeper:
    """Run the sweep over ``inventories`` under ``policy``.

    :param clock: epoch seconds now (injectable: tests move time past the grace period).
    :param sleep: how to wait ``claim_settle_seconds`` (injectable, like the clock).
    :param dry_run: overrides the policy's ``dry_run`` when given.
    :param act_threads: due resources re-checked and acted on in parallel (throttling: adaptive retries).
    """

    def __init__(
        self,
        policy: Any,
        inventories: list[Inventory],
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
        dry_run: bool | None = None,
        act_threads: int = 4,
    ) -> None:
        self.policy = policy
        self.act_threads = act_threads
        self.inventories = inventories
        self.clock = clock or time.time
        self.sleep = sleep
        self.dry_run = policy.dry_run if dry_run is None else dry_run
        self.sweep_id = uuid.uuid4().hex[:12]

    def run(self) -> SweepResult:
        wall = time.monotonic()
        result = SweepResult(self.sweep_id, self.clock(), self.dry_run)
        for inventory in self.inventories:
            try:
                self._sweep_place(inventory, result)
            except Exception as e:  # noqa: BLE001 - one place failing never stops the others
                result.errors.append(f"{inventory.location}: could not sweep: {type(e).__name__}: {e}")
            result.notes.extend(f"{inventory.location}: {n}" for n in getattr(inventory, "notes", []))
            result.api_calls += inventory.api_calls
        result.seconds = time.monotonic() - wall
        return result

    # -----------------------------------------------------------------------------------------------
    def _record(self, resource: Resource, outcome: str, reason: str, **kwargs: Any) -> SweepRecord:
        now = self.clock()
        uptime = round(resource.uptime(now), 1)
        tags = self.policy.tags
        return SweepRecord(
            kind=resource.kind,
            resource=resource.name,
            location=resource.location,
            outcome=outcome,
            reason=reason,
            pipeline=resource.tags.get(tags.pipeline),
            owner=resource.tags.get(tags.owner),
            backend=resource.backend,
            instance_type=resource.instance_type,
            instance_count=resource.instance_count,
            uptime_seconds=uptime,
            usd_uptime=resource_usd(resource, uptime),
            saving_usd_per_hour=hourly_usd(resource),
            gpu_hours=resource_gpu_hours(resource, uptime),
            at=now,
            **kwargs,
        )

    def _sweep_place(self, inventory: Inventory, result: SweepResult) -> None:
        tags = self.policy.tags
        candidates: list[Resource] = []
        for resource in inventory.resources():
            result.seen += 1
            if not self.policy.enabled(resource.kind) or not self.policy.in_scope(resource.tags):
                result.out_of_scope += 1
                continue
            if self.policy.is_exempt(resource.tags):
                with self._guard(result, resource, Finding(False, "exempt")):
                    detail = self._unmark(inventory, resource, "exempt") if tags.planned in resource.tags else ""
                    result.records.append(self._record(resource, "exempt", f"tagged {tags.exempt}", detail=detail))
                continue
            candidates.append(resource)
        if not candidates:
            return
        findings = inventory.assess(candidates)
        due: list[tuple[Resource, Finding, str]] = []
        for resource in candidates:
            finding = findings.get(resource.key) or Finding(False, "no finding")
            with self._guard(result, resource, finding):
                decided = self._decide(inventory, resource, finding)
                if isinstance(decided, SweepRecord):
                    result.records.append(decided)
                else:
                    due.append((resource, finding, decided))
        if not due:
            return
        # Claim every due resource first and wait once, so a sweep acting on many resources waits
        # claim_settle_seconds once, not once per resource.
        claimed: list[tuple[Resource, Finding, str, str]] = []
        for resource, finding, action in due:
            with self._guard(result, resource, finding):
                held = resource.tags.get(self.policy.tags.claim)
                if held and not self._claim_is_stale(held):
                    result.records.append(
                        self._record(resource, "skipped", f"claimed by sweep {held.split('@')[0]}", action=action)
                    )
                    continue
                claim = f"{self.sweep_id}@{int(self.clock())}"
                inventory.set_tag(resource, self.policy.tags.claim, claim)
                claimed.append((resource, finding, action, claim))
        if claimed:
            self.sleep(self.policy.claim_settle_seconds)  # lets a concurrent claim land before we read back

        def verify_and_act(item: tuple[Resource, Finding, str, str]) -> None:
            resource, finding, action, claim = item
            with self._guard(result, resource, finding):
                result.records.append(self._verify_and_act(inventory, resource, finding, action, claim))

        # Each due resource is independent of the others: re-check and act on a few at a time.
        with ThreadPoolExecutor(max_workers=max(1, self.act_threads), thread_name_prefix="teardown-act") as pool:
            list(pool.map(verify_and_act, claimed))

    @contextmanager
    def _guard(self, result: SweepResult, resource: Resource, finding: Finding):
        """Record a vanished resource or an error on one resource, and go on with the rest."""
        try:
            yield
        except ResourceGone as e:
            result.records.append(self._record(resource, "gone", str(e)))
        except Exception as e:  # noqa: BLE001 - a permission error on one resource: go on with the rest
            message = f"{type(e).__name__}: {e}"
            # botocore's ClientError carries a dict; Google's API errors carry an HTTP response or None.
            if isinstance(response := getattr(e, "response", None), dict):
                err = response.get("Error", {})
                message = f"{err.get('Code')}: {err.get('Message')}"
            result.errors.append(f"{resource.kind} {resource.name} ({resource.location}): {message}")
            result.records.append(self._record(resource, "error", message, evidence=finding.evidence))

    def _unmark(self, inventory: Inventory, resource: Resource, why: str) -> str:
        if self.dry_run:
            return f"would remove mark ({why})"
        inventory.remove_tag(resource, self.policy.tags.planned)
        if self.policy.tags.claim in resource.tags:
            inventory.remove_tag(resource, self.policy.tags.claim)
        return f"mark removed ({why})"

    def _decide(self, inventory: Inventory, resource: Resource, finding: Finding) -> SweepRecord | str:
        """The record of what was decided, or the action's name when the resource is due for it."""
        tags, now = self.policy.tags, self.clock()
        if finding.evidence.get("gone"):
            return self._record(resource, "gone", finding.reason, evidence=finding.evidence)
        if finding.evidence.get("error"):
            raise RuntimeError(finding.reason)
        action = self.policy.action_for(resource.kind)
        mark = Mark.decode(resource.tags.get(tags.planned))
        if not finding.idle:
            if mark is None:
                return self._record(resource, "busy", finding.reason, evidence=finding.evidence)
            detail = self._unmark(inventory, resource, "busy again")
            outcome = "would unmark" if self.dry_run else UNMARKED
            return self._record(resource, outcome, finding.reason, detail=detail, evidence=finding.evidence)
        if action == "report":
            return self._record(resource, "reported", finding.reason, action=action, evidence=finding.evidence)
        if mark is None or mark.action != action:
            if self.dry_run:
                return self._record(resource, "would mark", finding.reason, action=action, evidence=finding.evidence)
            value = Mark(action, now).encode()
            inventory.set_tag(resource, tags.planned, value)
            return self._record(
                resource, MARKED, finding.reason, action=action, detail=f"{tags.planned}={value}", evidence=finding.evidence
            )
        due = mark.planned_at + self.policy.grace_period
        if now < due:
            return self._record(
                resource, "waiting", finding.reason, action=action,
                detail=f"marked; acts after {int(due - now)} s of grace", evidence=finding.evidence,
            )
        if self.dry_run:
            return self._record(resource, "would act", finding.reason, action=action, evidence=finding.evidence)
        return action

    def _verify_and_act(
        self, inventory: Inventory, resource: Resource, finding: Finding, action: str, claim: str
    ) -> SweepRecord:
        tags = self.policy.tags
        mark_value = resource.tags[tags.planned]
        fresh = inventory.refresh(resource)
        if fresh.tags.get(tags.claim) != claim:
            return self._record(fresh, "skipped", "another sweep claimed it first", action=action)
        if fresh.tags.get(tags.planned) != mark_value:
            return self._record(fresh, "skipped", "its mark changed while claiming", action=action)
        recheck = inventory.assess([fresh], refreshed=True).get(fresh.key) or Finding(False, "no finding")
        if not recheck.idle:
            if recheck.evidence.get("gone"):
                raise ResourceGone(recheck.reason)
            if recheck.evidence.get("error"):
                raise RuntimeError(recheck.reason)
            detail = self._unmark(inventory, fresh, "busy again at the re-check")
            return self._record(fresh, UNMARKED, recheck.reason, detail=detail, evidence=recheck.evidence)
        detail = inventory.act(fresh, action)
        if fresh.kind == "sagemaker.notebook_instance":
            # A stopped notebook keeps its tags: a restart must begin without our old mark.
            self._unmark(inventory, fresh, "acted")
        return self._record(fresh, ACTED, finding.reason, action=action, detail=detail, evidence=recheck.evidence)

    def _claim_is_stale(self, claim: str) -> bool:
        try:
            at = float(claim.rpartition("@")[2])
        except ValueError:
            return True
        return self.clock() - at > 3600.0


def format_records(records: list[SweepRecord]) -> str:
    """The sweep's records as a fixed-width table for the task log."""
    header = ("outcome", "kind", "resource", "location", "action", "uptime h", "$/h saved", "reason / detail")
    rows = [
        (
            r.outcome,
            r.kind,
            r.resource,
            r.location,
            r.action or "-",
            f"{r.uptime_seconds / 3600:.2f}",
            "-" if r.saving_usd_per_hour is None else f"{r.saving_usd_per_hour:.4f}",
            r.reason + (f" | {r.detail}" if r.detail else ""),
        )
        for r in records
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    widths[-1] = 0
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=False)).rstrip()]
    lines.extend("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in rows)
    return "\n".join(lines)


def build_inventories(policy: Any, clock: Clock | None = None, **local_kwargs: Any) -> list[Inventory]:
    """Every inventory the policy configures (AWS accounts x regions, GCP projects x regions, this machine)."""
    from airflow_retrain.teardown import INVENTORY_CLASSES, inventory_class

    # Inventories the policy leaves unconfigured are not even imported (no boto3 without an AWS account).
    configured = {"sagemaker": bool(policy.aws), "vertex": bool(policy.gcp), "local": policy.local.enabled}
    inventories: list[Inventory] = []
    for name in INVENTORY_CLASSES:
        if not configured.get(name, True):
            continue
        cls = inventory_class(name)
        if name == "local":
            inventories.append(cls(policy, clock, **local_kwargs))
        else:
            inventories.extend(cls.from_policy(policy, clock))
    return inventories
