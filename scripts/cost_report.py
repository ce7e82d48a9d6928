"""`make cost-report`: GPU-hours and dollars per pipeline per day and week, on-demand vs spot, and the waste
the gpu_teardown sweeps stopped, from the cost ledger (``retrain_ledger.entries`` in the warehouse).

The warehouse is the ``retrain_warehouse`` connection (the embedded DuckDB under the state dir while it is
undefined); ``--conn-id`` picks another. Weekly budgets come from the pipeline specs (``budget.weekly_usd``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conn-id", default="retrain_warehouse", help="warehouse connection holding the ledger")
    parser.add_argument("--days", type=int, default=28, help="how far back to report (default: 28 days)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("RETRAIN_HOME", str(ROOT))

    from airflow_retrain.spec import load_specs
    from airflow_retrain.teardown.ledger import CostLedger, format_cost_report, summarize

    ledger = CostLedger.from_connection(args.conn_id)
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
