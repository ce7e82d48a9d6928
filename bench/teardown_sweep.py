"""Benchmark: one gpu_teardown sweep over 1,000 fake SageMaker resources (the fake cloud, in-process, real boto3).

Resources: endpoints, training jobs, processing jobs and notebook instances, 80 % tagged by this package
(half of those idle or expired), 10 % exempt, 10 % untagged. Each size gets a fresh fake cloud and two
sweeps: the first marks, the second (the clock moved past the grace) re-checks and acts. API calls are
counted by botocore's ``before-call`` event; the slope (calls per resource) comes from a least-squares
fit over the sizes. The target: the sweep well inside its 15-minute schedule, calls linear in resources.
moto answers in a few milliseconds; a real API in tens. The last row repeats the largest size with
``--latency-ms`` of simulated network latency on every HTTP request (a ``before-send`` sleep), so the wall
time includes what parallel reads (8 threads) and sequential writes (marks, claims, actions) cost there.

    .venv/bin/python bench/teardown_sweep.py [--sizes 250 500 1000] [--latency-ms 50] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
SCHEDULE_SECONDS = 15 * 60
CONN_ID, REGION = "aws_bench", "us-east-1"


def populate(sm, n: int, now: float) -> dict[str, int]:
    import helpers as fake
    from moto.sagemaker.models import sagemaker_backends

    counts = {"endpoint": 0, "training_job": 0, "processing_job": 0, "notebook": 0}
    for i in range(n):
        kind = ("endpoint", "endpoint", "training_job", "training_job", "endpoint", "processing_job", "notebook",
                "endpoint", "training_job", "endpoint")[i % 10]
        counts[kind] += 1
        bucket = (i // 10) % 10  # 0-7 ours (even: idle/expired, odd: busy/live), 8 exempt, 9 untagged
        tags = {"retrain:pipeline": "bench", "retrain:owner": "bench"}
        tags["retrain:expires-at"] = str(int(now - 60 if bucket % 2 == 0 else now + 86400))
        if bucket == 8:
            tags["retrain:keep"] = "true"
        if bucket == 9:
            tags = {"team": "other"}
        name = f"r{i:05d}"
        if kind == "endpoint":
            tags.pop("retrain:expires-at", None) if bucket % 2 == 0 else None  # idle by metrics, not TTL
            fake.create_endpoint(sm, name, tags)
        elif kind == "training_job":
            fake.create_training_job(sm, name, tags)
        elif kind == "processing_job":
            fake.create_processing_job(sm, name, tags)
            # moto records processing jobs Completed; the fake serves from this process, so hold it running.
            sagemaker_backends["123456789012"][REGION].processing_jobs[name].processing_job_status = "InProgress"
        else:
            fake.create_notebook(sm, name, tags)
    return counts


def run_size(cloud, n: int, latency_ms: float = 0.0) -> list[dict]:
    import helpers as fake

    from airflow_retrain.teardown.policy import TeardownPolicy
    from airflow_retrain.teardown.sagemaker import SageMakerInventory
    from airflow_retrain.teardown.sweep import Sweeper

    cloud.reset()
    clock = {"now": time.time() + 2 * 3600}
    sm, cw = fake.sagemaker_estate_cloud(cloud)
    populate(sm, n, clock["now"])
    for i in range(n):  # busy endpoints: invoked ten minutes ago
        if i % 10 in (0, 1, 4, 7, 9) and ((i // 10) % 10) % 2 == 1 and (i // 10) % 10 < 8:
            fake.invoke(cw, f"r{i:05d}", clock["now"] - 600)
    policy = TeardownPolicy.model_validate(
        {"aws": [{"connection_id": CONN_ID, "regions": [REGION]}], "local": {"enabled": False},
         "claim_settle_seconds": 0, "kinds": {"sagemaker.notebook_instance": {"idle_window": "1h"}}}
    )
    rows = []
    for sweep in ("mark", "act"):
        inventories = SageMakerInventory.from_policy(policy, lambda: clock["now"])
        for client in (inventories[0].sagemaker, inventories[0].cloudwatch):  # built outside the timing
            if latency_ms:
                client.meta.events.register("before-send", lambda **_: time.sleep(latency_ms / 1000))
        start = time.perf_counter()
        result = Sweeper(policy, inventories, clock=lambda: clock["now"]).run()
        wall = time.perf_counter() - start
        rows.append({"resources": n, "sweep": sweep, "latency_ms": latency_ms, "wall_s": round(wall, 2),
                     "api_calls": result.api_calls, "share_of_schedule": round(wall / SCHEDULE_SECONDS, 4),
                     "calls_per_resource": round(result.api_calls / n, 2), "outcomes": result.summary()["outcomes"],
                     "errors": len(result.errors)})
        clock["now"] += 31 * 60
    return rows


def slope(points: list[tuple[int, int]]) -> tuple[float, float]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return b, my - b * mx


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--latency-ms", type=float, default=50.0, help="simulated latency for the last run (0: skip)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-teardown-"))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from fakes import fake_cloud

    cloud = fake_cloud.start_fake_cloud(in_process=True)
    os.environ.update(cloud.airflow_env(CONN_ID))
    real_stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Airflow's log lines stay off the table / JSON
            logging.getLogger("airflow.providers.amazon").setLevel(logging.WARNING)
            run_size(cloud, 10)  # warm-up: imports and first connections, not timed
            rows = [row for n in args.sizes for row in run_size(cloud, n)]
            if args.latency_ms:
                rows += run_size(cloud, max(args.sizes), args.latency_ms)
    finally:
        cloud.stop()
    sys.stdout = real_stdout
    fits = {}
    for sweep in ("mark", "act"):
        b, a = slope([(r["resources"], r["api_calls"]) for r in rows if r["sweep"] == sweep and not r["latency_ms"]])
        fits[sweep] = {"calls_per_resource": round(b, 3), "fixed_calls": round(a, 1)}
    if args.json:
        print(json.dumps({"rows": rows, "fit": fits, "latency_ms": args.latency_ms, "schedule_s": SCHEDULE_SECONDS}, indent=2))
        return
    print(f"{'resources':>9} {'sweep':>5} {'latency':>7} {'wall s':>7} {'of 15 min':>9} {'API calls':>9} {'calls/res':>9}  outcomes")
    for r in rows:
        print(f"{r['resources']:>9} {r['sweep']:>5} {r['latency_ms']:>5g}ms {r['wall_s']:>7.2f} {r['share_of_schedule']:>9.1%} "
              f"{r['api_calls']:>9} {r['calls_per_resource']:>9.2f}  {r['outcomes']}")
    for sweep, fit in fits.items():
        print(f"slope ({sweep} sweep): {fit['calls_per_resource']} API calls per resource + {fit['fixed_calls']} fixed")


if __name__ == "__main__":
    main()
