"""`make cost-report`: GPU-hours and dollars per pipeline per day and week, on-demand vs spot, and the waste
the gpu_teardown sweeps stopped, from the cost ledger (``retrain_ledger.entries`` in the warehouse).

The warehouse is the ``retrain_warehouse`` connection (the embedded DuckDB under the state dir while it is
undefined); ``--conn-id`` picks another. Weekly budgets come from the pipeline specs (``budget.weekly_usd``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_DAYS = 3650  # ten years: far beyond any ledger, and far from datetime's limits
# Airflow's own rule for connection ids (airflow.models.connection.RE_SANITIZE_CONN_ID, CONN_ID_MAX_LEN).
CONN_ID = re.compile(r"[\w#!()\-.:/\\]{1,250}")


def days(text: str) -> int:
    """``--days``: a whole number of days from 1 to :data:`MAX_DAYS`."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"must be a whole number of days from 1 to {MAX_DAYS}, got {text!r}")
    return value


def conn_id(text: str) -> str:
    """``--conn-id``: a name Airflow accepts as a connection id."""
    if not CONN_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"must be an Airflow connection id (1-250 letters, digits or _#!()-.:/\\), got {text!r}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conn-id", type=conn_id, default="retrain_warehouse",
                        help="warehouse connection holding the ledger (default: retrain_warehouse)")
    parser.add_argument("--days", type=days, default=28, help=f"how far back to report, 1 to {MAX_DAYS} (default: 28)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("RETRAIN_HOME", str(ROOT))

    from airflow.exceptions import AirflowNotFoundException

    from airflow_retrain.spec import load_specs
    from airflow_retrain.teardown.ledger import CostLedger, format_cost_report, summarize

    try:
        ledger = CostLedger.from_connection(args.conn_id)
    except AirflowNotFoundException:
        parser.error(f"argument --conn-id: connection {args.conn_id!r} is not defined (define it, e.g. "
                     f"AIRFLOW_CONN_{args.conn_id.upper()}, or leave --conn-id out for the embedded warehouse)")
    since = datetime.now(UTC) - timedelta(days=args.days)
    summary = summarize(ledger.rows(since), time.time())
    specs_dir = Path(os.environ.get("RETRAIN_SPECS_DIR", ROOT / "include" / "pipelines"))
    budgets = {s.name: s.budget.weekly_usd for s in load_specs(specs_dir).specs if s.budget}
    if args.json:
        print(json.dumps({"ledger": ledger.describe(), "since": since.isoformat(), "budgets": budgets, **summary}, indent=2))
    else:
        print(format_cost_report(summary, f"{ledger.describe()}, last {args.days} days", budgets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
