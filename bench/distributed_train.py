"""Benchmark: churn training on 1, 2 and 4 local processes (data-parallel XGBoost, ``xgboost.collective``).

Every configuration runs the pipeline's own path: the local backend's multi-host emulation (N processes
of ``include/training/churn/train.py`` on loopback, the tracker on the first, the train data sharded by
file) on a synthetic version of the churn features (generated with the mart's schema and a learnable
label; ``--rows`` of it, 1,000,000 by default, to show where scaling starts to pay). Each process gets
``cores // N`` OpenMP threads, so every configuration uses the same cores: the ratio is what sharding
and the per-round all-reduce cost or save. Prints wall time (submit to Completed), the training time of
the slowest host, holdout roc_auc, the speed-up against 1 process and the scaling efficiency.

    .venv/bin/python bench/distributed_train.py [--rows 1000000] [--processes 1 2 4] [--json FILE]

``--json FILE`` writes ``{"rows", "processes": [1, 2, 4], "wall_s": [...], "roc_auc": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PY = ROOT / "include" / "training" / "churn" / "train.py"
# The tests' churn-schema generator (the one synthetic version of the mart, with a learnable label).
sys.path.insert(0, str(ROOT / "tests"))
from fakes.churn_data import churn_frame  # noqa: E402


def write_channels(root: Path, rows: int, files: int) -> dict[str, str]:
    train, test = root / "train", root / "test"
    train.mkdir(parents=True)
    test.mkdir(parents=True)
    frame = churn_frame(rows, 1)
    for i, part in enumerate(np.array_split(np.arange(rows), files)):
        frame.iloc[part].to_parquet(train / f"part-{i:03d}.parquet", index=False)
    churn_frame(max(10_000, rows // 5), 2).to_parquet(test / "part-000.parquet", index=False)
    return {"train": str(train), "test": str(test)}


def run(backend, channels: dict[str, str], name: str, processes: int, hps: dict) -> dict:
    from airflow_retrain.training.base import JobState, TrainingJobRequest

    started = time.perf_counter()
    backend.submit(
        TrainingJobRequest(job_name=name, entry_point=str(TRAIN_PY), channels=channels, hyperparameters=hps,
                           instance_count=processes, max_runtime_seconds=7200)
    )
    while not (job := backend.describe(name)).state.terminal:
        time.sleep(0.2)
    wall = time.perf_counter() - started
    if job.state != JobState.COMPLETED:
        raise SystemExit(f"{name}: {job.state.value}: {job.failure_reason}")
    metrics = json.loads((backend.jobs_dir / name / "output" / "data" / "metrics.json").read_text())
    hosts = metrics["info"].get("host_train_seconds") or {"algo-1": metrics["info"]["train_seconds"]}
    return {"wall_s": wall, "train_s": max(hosts.values()), "roc_auc": metrics["metrics"]["roc_auc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--n-estimators", type=int, default=100)
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    from airflow_retrain.training.local import LocalTrainingBackend

    cores = os.cpu_count() or 1
    files = max(args.processes) * 2
    hps = {"n_estimators": args.n_estimators, "max_depth": 6, "early_stopping_rounds": 0, "checkpoint_interval": 0}
    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        channels = write_channels(root / "data", args.rows, files)
        print(f"data: {args.rows:,} train rows in {files} parquet files, churn schema ({time.perf_counter() - t:.1f} s)")
        results = []
        for n in args.processes:
            threads = max(1, cores // n)
            backend = LocalTrainingBackend(jobs_dir=root / "jobs", environment={"OMP_NUM_THREADS": str(threads)})
            results.append({"processes": n, "threads": threads, **run(backend, channels, f"bench-{n}", n, hps)})
    base = results[0]
    print(f"\n{args.rows:,} rows, {args.n_estimators} rounds, depth 6, {cores} cores "
          f"(each of N processes gets cores // N OpenMP threads)")
    print(f"{'processes':>9} {'threads/proc':>12} {'wall s':>8} {'train s':>8} {'speed-up':>8} {'efficiency':>10} "
          f"{'roc_auc':>8} {'Δ roc_auc':>9}")
    for r in results:
        speed = base["wall_s"] / r["wall_s"]
        print(f"{r['processes']:>9} {r['threads']:>12} {r['wall_s']:>8.1f} {r['train_s']:>8.1f} {speed:>7.2f}x "
              f"{speed / (r['processes'] / base['processes']):>9.0%} {r['roc_auc']:>8.4f} "
              f"{r['roc_auc'] - base['roc_auc']:>+9.4f}")
    if args.json:
        args.json.write_text(json.dumps({
            "rows": args.rows,
            "processes": [r["processes"] for r in results],
            "wall_s": [round(r["wall_s"], 3) for r in results],
            "roc_auc": [round(r["roc_auc"], 6) for r in results],
        }, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
