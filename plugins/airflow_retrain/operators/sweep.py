"""GpuTeardownSweepOperator: one sweep of the ``gpu_teardown`` DAG (inventory, mark-then-act, ledger)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from airflow_retrain.teardown.policy import load_policy


class GpuTeardownSweepOperator(BaseOperator):
    """Sweep every place the teardown policy configures; log a table of what it found and did.

    Resources it stopped or deleted go to the cost ledger with their uptime cost and the hourly saving.
    Everything is swept even when some resources fail (a permission error, a vanished endpoint); with
    the policy's ``fail_on_errors`` the task fails *afterwards*, naming what could not be done.

    :param policy_path: the policy YAML (default: ``RETRAIN_TEARDOWN_POLICY`` or
        ``include/teardown/policy.yaml``); read again at run time, so edits apply to the next sweep.
    :param dry_run: overrides the policy's ``dry_run`` (``None``: as the policy says).
    """

    template_fields = ("policy_path", "dry_run")
    ui_color = "#ffd8b1"

    def __init__(self, *, policy_path: str | None = None, dry_run: bool | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy_path = policy_path
        self.dry_run = dry_run

    def execute(self, context) -> dict[str, Any]:
        from airflow_retrain.teardown.ledger import CostLedger, sweep_entry
        from airflow_retrain.teardown.sweep import ACTED, Sweeper, build_inventories, format_records

        policy = load_policy(self.policy_path)
        dry_run = policy.dry_run if self.dry_run is None else bool(self.dry_run)
        sweeper = Sweeper(policy, build_inventories(policy), dry_run=dry_run)
        self.log.info(
            "Sweep %s%s: policy %s, scope %s, idle window %ss, grace %ss",
            sweeper.sweep_id, " (DRY RUN: nothing changes)" if dry_run else "", policy.source_path,
            policy.scope, int(policy.idle_window), int(policy.grace_period),
        )
        result = sweeper.run()
        shown = [r for r in result.records if r.outcome != "busy"]
        if shown:
            for line in format_records(shown).splitlines():
                self.log.info("%s", line)
        for note in result.notes:
            self.log.info("Note: %s", note)
        acted = result.by_outcome(ACTED)
        if acted:
            ledger = CostLedger.from_connection(policy.warehouse_connection_id)
            try:
                ledger.write([sweep_entry(r, result.sweep_id) for r in acted])
                self.log.info("Ledger: %d action(s) recorded in %s", len(acted), ledger.describe())
            except Exception as e:  # noqa: BLE001 - the actions happened; say the ledger missed them
                result.errors.append(f"ledger: could not record {len(acted)} action(s): {type(e).__name__}: {e}")
        summary = result.summary()
        self.log.info(
            "Sweep %s: %d resource(s) seen, %d out of scope, outcomes %s, $%.4f/h stopped, %d API call(s), %.1f s",
            result.sweep_id, result.seen, result.out_of_scope, summary["outcomes"], summary["saving_usd_per_hour"],
            result.api_calls, result.seconds,
        )
        for error in result.errors:
            self.log.warning("Could not do: %s", error)
        if result.errors and policy.fail_on_errors:
            raise RuntimeError(
                f"sweep {result.sweep_id} finished, but {len(result.errors)} thing(s) could not be done: "
                + "; ".join(result.errors)
            )
        summary["changed"] = [r.to_dict() for r in result.records if r.outcome not in ("busy", "exempt")][:200]
        return summary
