"""Benchmark: batch scoring of the churn features through MLflow pyfunc and ONNX Runtime, drift, DuckDB write.

One process, in order, on ``--rows`` rows of the churn mart's columns (``tests/fakes/churn_data.py``):

1. trains an XGBoost churn classifier on ``--train-rows`` rows with the churn script's default shape
   (``--trees`` 300, ``--depth`` 5; ``include/training/churn/train.py``), saves it as the registry would
   (``mlflow.xgboost.save_model``) and profiles the training rows into the snapshot the model gate stores;
2. ``pyfunc``: loads the saved model as scoring does (:class:`~airflow_retrain.gates._mlflow.LoadedModel`)
   and scores every row; ``onnx``: converts as registration does (:mod:`airflow_retrain.registry.onnx`)
   and scores the same rows in ONNX Runtime; each best of ``--repeat`` after one warm-up call, both with
   their libraries' default thread counts; ``max_abs_diff`` is the largest difference of their scores;
3. ``drift_s``: PSI and KS of every feature against the snapshot (:func:`~airflow_retrain.monitoring.drift.
   feature_drift`), one call;
4. ``write_s``: the predictions into a fresh DuckDB file (:meth:`~airflow_retrain.monitoring.store.
   MonitoringStore.replace_predictions`: one transaction), one call.

    .venv/bin/python bench/scoring.py [--rows 1000000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "tests")]

ID, TARGET = "customer_id", "churned"


def best_of(fn, repeat: int) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls after one warm-up call, and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to score")
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)

    import mlflow.xgboost
    import numpy as np
    import xgboost
    from fakes.churn_data import churn_frame

    from airflow_retrain.gates._mlflow import LoadedModel
    from airflow_retrain.gates.data import profile_table
    from airflow_retrain.monitoring.drift import Thresholds, feature_drift
    from airflow_retrain.monitoring.store import MonitoringStore
    from airflow_retrain.registry import onnx as onnx_export

    work = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    train = churn_frame(args.train_rows, seed=1)
    features = [c for c in train.columns if c not in (ID, TARGET)]
    model = xgboost.XGBClassifier(n_estimators=args.trees, max_depth=args.depth)
    model.fit(train[features], train[TARGET])
    mlflow.xgboost.save_model(model, str(work / "model"), model_format="json")
    snapshot = profile_table(train, target_column=TARGET, id_column=ID)
    population = churn_frame(args.rows, seed=2)
    frame = population[features]

    pyfunc = LoadedModel(work / "model")
    pyfunc_s, pyfunc_scores = best_of(lambda: pyfunc.predict_proba(frame), args.repeat)
    sess = onnx_export.session(onnx_export.to_onnx(model, len(features)))
    onnx_s, onnx_scores = best_of(lambda: onnx_export.onnx_predict_proba(sess, frame), args.repeat)
    max_abs_diff = float(np.max(np.abs(np.asarray(pyfunc_scores) - np.asarray(onnx_scores))))

    start = time.perf_counter()
    report = feature_drift(snapshot, population, Thresholds(psi_max=0.2, ks_max=0.1))
    drift_s = time.perf_counter() - start

    # A bench script (not the package) may point an Airflow connection at its scratch DuckDB file.
    os.environ["AIRFLOW_CONN_BENCH_SCORING_WH"] = json.dumps(
        {"conn_type": "retrain_duckdb", "host": str(work / "wh.duckdb")})
    from airflow_retrain.hooks.warehouse import WarehouseHook

    store = MonitoringStore(WarehouseHook("bench_scoring_wh"))
    predictions = population[[ID]].rename(columns={ID: "id"}).assign(score=pyfunc_scores)
    start = time.perf_counter()
    written = store.replace_predictions("bench", "run1", predictions, model_version="1", model_run_id="bench",
                                        runtime="pyfunc")
    write_s = time.perf_counter() - start
    assert written == args.rows

    result = {
        "rows": args.rows,
        "pyfunc_rows_per_s": args.rows / pyfunc_s,
        "onnx_rows_per_s": args.rows / onnx_s,
        "max_abs_diff": max_abs_diff,
        "drift_s": drift_s,
        "write_s": write_s,
        "pyfunc_s": pyfunc_s,
        "onnx_s": onnx_s,
        "features": len(features),
        "drifted_features": len(report.drifted),
        "model": {"trees": args.trees, "depth": args.depth, "train_rows": args.train_rows},
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    print(f"{args.rows:,} rows, {len(features)} features, XGBoost {args.trees} trees depth {args.depth}; "
          f"{os.cpu_count()} CPUs, load average {result['load_average'][0]:.2f}")
    print(f"{'step':28} {'seconds':>9} {'rows/s':>12} {'vs pyfunc':>10}")
    print(f"{'score: pyfunc (XGBoost)':28} {pyfunc_s:9.3f} {result['pyfunc_rows_per_s']:12,.0f} {1.0:10.2f}")
    print(f"{'score: ONNX Runtime':28} {onnx_s:9.3f} {result['onnx_rows_per_s']:12,.0f} "
          f"{result['onnx_rows_per_s'] / result['pyfunc_rows_per_s']:10.2f}")
    print(f"{'drift (PSI+KS, all features)':28} {drift_s:9.3f} {args.rows / drift_s:12,.0f} {drift_s / pyfunc_s:10.2f}x time")
    print(f"{'write predictions (DuckDB)':28} {write_s:9.3f} {args.rows / write_s:12,.0f} {write_s / pyfunc_s:10.2f}x time")
    print(f"max |pyfunc - onnx| = {max_abs_diff:.3g}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
