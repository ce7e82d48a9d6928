#!/usr/bin/env python3
"""Churn classifier training script (XGBoost): the model code.

Runs unchanged in a SageMaker training container (this folder ships as ``sourcedir.tar.gz``) and under
the local training backend. Where the data comes from, where the model and ``metrics.json`` go, how
hyperparameters arrive (``SM_HPS``, ``--key value``) and how a failure is reported (exit status 1, last
stderr line ``ERROR: <reason>``, the failure file ``/opt/ml/output/failure``) belong to the container
contract: ``contract.py`` beside this file (see ``README.md``). This file imports nothing from Airflow
or ``airflow_retrain``: only the standard library, numpy, pandas, pyarrow, xgboost and scikit-learn.

Channels ``train`` and ``test`` hold ``*.parquet`` files. Every column except the id column and the
target column is a feature and must be numeric (ints, floats or bools; decimals are read as floats;
nulls become missing values, which XGBoost handles natively). The target must be binary 0/1.

Early stopping uses a seeded, stratified validation split carved from TRAIN only; the holdout (TEST) is
used for nothing but the reported metrics. When early stopping fires, the saved model is truncated to the
best iteration, so every loader (XGBClassifier, raw Booster, MLflow) scores with exactly the trees the
metrics were computed with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from contract import (
    DEVICES,
    TrainingEnvironment,
    TrainingError,
    choose_device,
    log,
    preview,
    resolve_hyperparameters,
    run_main,
    warn,
    write_json,
    write_metrics,
)

# Spin-waiting OpenMP threads collapse throughput when another OpenMP process (a second training
# run, DuckDB, ...) shares the cores: measured 0.2s -> 4.5s on a 2-core box. Passive waiting costs
# next to nothing on a dedicated instance. Must be set before xgboost loads libgomp.
if not os.environ.get("OMP_WAIT_POLICY"):
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

try:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import xgboost as xgb
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )
    from sklearn.model_selection import train_test_split
except ImportError as _exc:  # reported by main() so that the failure file is still written
    _IMPORT_ERROR: ImportError | None = _exc
else:
    _IMPORT_ERROR = None


THRESHOLD = 0.5
CHANNELS = ("train", "test")
# The holdout metrics this script writes to metrics.json. The pipeline spec loader reads this list
# (without importing the script) and rejects a gate on any other metric before training starts.
METRICS = ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier")


# --------------------------------------------------------------------------- hyperparameters


@dataclasses.dataclass(frozen=True)
class HyperParameters:
    target_column: str = "churned"
    id_column: str = "customer_id"
    n_estimators: int = 300
    max_depth: int = 5
    learning_rate: float = 0.05
    subsample: float = 0.9
    colsample_bytree: float = 0.8
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    early_stopping_rounds: int = 30  # 0 disables early stopping (and the validation split)
    validation_fraction: float = 0.15  # share of TRAIN rows held out for early stopping
    seed: int = 42
    device: str = "auto"
    checkpoint_interval: int = 10  # rounds between checkpoints in the contract's checkpoint dir; 0: none





def hyperparameter_problems(hp: HyperParameters) -> list[str]:
    problems = []
    if not hp.target_column:
        problems.append("target_column must not be empty")
    if hp.target_column == hp.id_column:
        problems.append("target_column and id_column must differ")
    if hp.n_estimators < 1:
        problems.append("n_estimators must be >= 1")
    if hp.max_depth < 1:
        problems.append("max_depth must be >= 1")
    if not hp.learning_rate > 0:
        problems.append("learning_rate must be > 0")
    if not 0 < hp.subsample <= 1:
        problems.append("subsample must be in (0, 1]")
    if not 0 < hp.colsample_bytree <= 1:
        problems.append("colsample_bytree must be in (0, 1]")
    if hp.min_child_weight < 0:
        problems.append("min_child_weight must be >= 0")
    if hp.reg_lambda < 0:
        problems.append("reg_lambda must be >= 0")
    if hp.early_stopping_rounds < 0:
        problems.append("early_stopping_rounds must be >= 0 (0 disables early stopping)")
    if not 0 < hp.validation_fraction < 1:
        problems.append("validation_fraction must be in (0, 1)")
    if hp.seed < 0:
        problems.append("seed must be >= 0")
    if hp.checkpoint_interval < 0:
        problems.append("checkpoint_interval must be >= 0 (0 disables checkpoints)")
    if hp.device.lower() not in DEVICES:
        problems.append(f"device must be one of {'|'.join(DEVICES)}, got {hp.device!r}")
    return problems



# --------------------------------------------------------------------------- data


def list_parquet_files(directory: Path, channel: str) -> list[Path]:
    if not directory.is_dir():
        raise TrainingError(
            f"{channel} channel directory {directory} does not exist (SM_CHANNEL_{channel.upper()})"
        )
    files = sorted(
        p
        for p in directory.rglob("*.parquet")
        if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(directory).parts)
    )
    if not files:
        raise TrainingError(f"{channel} channel directory {directory} contains no *.parquet files")
    return files


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt/non-parquet files
        raise TrainingError(f"cannot read parquet file {path}: {exc}") from None
    # DECIMAL columns (e.g. ROUND() in a dbt/DuckDB model) would become Python Decimal objects.
    for i, field in enumerate(table.schema):
        if pa.types.is_decimal(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.float64()))
    return table.to_pandas()


def load_channel(directory: Path, channel: str, shard: tuple[int, int] | None = None) -> pd.DataFrame:
    """All rows of a channel; with ``shard=(rank, world)`` only this host's share: its files
    (``files[rank::world]``) when there are at least ``world`` files, else every ``world``-th row."""
    files = list_parquet_files(directory, channel)
    by_rows = False
    if shard is not None and shard[1] > 1:
        rank, world = shard
        if len(files) >= world:
            files = files[rank::world]
            log(f"data: {channel}: host {rank + 1}/{world} reads {len(files)} of the channel's files")
        else:
            by_rows = True
    frames = []
    columns: list[str] | None = None
    for path in files:
        frame = _read_parquet(path)
        if columns is None:
            columns = list(frame.columns)
        elif set(frame.columns) != set(columns):
            missing = sorted(set(columns) - set(frame.columns))
            extra = sorted(set(frame.columns) - set(columns))
            raise TrainingError(
                f"{channel} parquet files disagree on columns: {path.name} "
                f"lacks {missing or 'nothing'}, adds {extra or 'nothing'} compared with {files[0].name}"
            )
        frames.append(frame[columns])
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    if by_rows:
        rank, world = shard  # type: ignore[misc]
        df = df.iloc[rank::world].reset_index(drop=True)
        log(f"data: {channel}: {len(files)} file(s) for {world} hosts: host {rank + 1} takes every {world}th row")
    log(
        f"data: {channel}: {len(files)} parquet file(s) in {directory}, {df.shape[0]} rows x {df.shape[1]} columns"
    )
    if df.shape[0] == 0:
        raise TrainingError(f"{channel} data is empty (0 rows in {directory})")
    return df


def extract_target(df: pd.DataFrame, hp: HyperParameters, channel: str) -> np.ndarray:
    name = hp.target_column
    if name not in df.columns:
        raise TrainingError(
            f"target column {name!r} not found in {channel} data "
            f"(columns: {preview([str(c) for c in df.columns])}; set the target_column hyperparameter)"
        )
    series = df[name]
    n_null = int(series.isna().sum())
    if n_null:
        raise TrainingError(f"target column {name!r} has {n_null} null value(s) in {channel} data")
    if pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype="int64")
    if not pd.api.types.is_numeric_dtype(series):
        sample = [str(v) for v in pd.unique(series)[:5]]
        raise TrainingError(
            f"target column {name!r} in {channel} data must be binary 0/1 but is non-numeric "
            f"(dtype {series.dtype}, values like {sample})"
        )
    values = series.to_numpy(dtype="float64")
    bad = sorted(set(np.unique(values).tolist()) - {0.0, 1.0})
    if bad:
        raise TrainingError(
            f"target column {name!r} in {channel} data must be binary 0/1; found other values {bad[:5]}"
        )
    return values.astype("int64")


def feature_columns_of(df: pd.DataFrame, hp: HyperParameters) -> list[str]:
    if hp.id_column not in df.columns:
        log(f"data: id column {hp.id_column!r} not present; nothing to exclude for it")
    features = [str(c) for c in df.columns if c not in (hp.target_column, hp.id_column)]
    if not features:
        raise TrainingError("train data has no feature columns besides the id and target columns")
    bad_names = [c for c in features if any(ch in c for ch in "[]<")]
    if bad_names:
        raise TrainingError(f"feature column names may not contain '[', ']' or '<': {preview(bad_names)}")
    return features


def build_features(df: pd.DataFrame, features: list[str], hp: HyperParameters, channel: str) -> pd.DataFrame:
    missing = [c for c in features if c not in df.columns]
    if missing:
        raise TrainingError(f"{channel} data lacks feature column(s) present in train: {preview(missing)}")
    extra = [str(c) for c in df.columns if c not in features and c not in (hp.target_column, hp.id_column)]
    if extra:
        warn(f"{channel} data has column(s) not in train, ignored: {preview(extra)}")

    non_numeric = [
        f"{c} ({df[c].dtype})"
        for c in features
        if not (pd.api.types.is_bool_dtype(df[c]) or pd.api.types.is_numeric_dtype(df[c]))
        or pd.api.types.is_complex_dtype(df[c])
    ]
    if non_numeric:
        raise TrainingError(
            f"non-numeric feature column(s) in {channel} data: {preview(non_numeric)}; "
            "encode them upstream or set the id_column/target_column hyperparameters"
        )
    # to_numpy with na_value handles nullable Int64/Float64/boolean as well as plain dtypes.
    X = pd.DataFrame(
        {c: df[c].to_numpy(dtype="float64", na_value=np.nan) for c in features},
        index=df.index,
    )
    values = X.to_numpy()
    infinite = [c for c, flag in zip(features, np.isinf(values).any(axis=0), strict=True) if flag]
    if infinite:
        raise TrainingError(f"feature column(s) with infinite values in {channel} data: {preview(infinite)}")
    all_missing = [c for c, flag in zip(features, np.isnan(values).all(axis=0), strict=True) if flag]
    if all_missing:
        warn(f"feature column(s) entirely null in {channel} data: {preview(all_missing)}")
    n_missing = int(np.isnan(values).sum())
    if n_missing:
        log(f"data: {channel}: {n_missing} missing feature value(s); XGBoost treats them as missing")
    return X


# --------------------------------------------------------------------------- device


def _device_of(model: xgb.XGBClassifier) -> str:
    config = json.loads(model.get_booster().save_config())
    device = str(config["learner"]["generic_param"].get("device", "cpu"))
    return "cuda" if device.startswith("cuda") or device.startswith("gpu") else "cpu"


def _cuda_works() -> tuple[bool, str]:
    """Whether XGBoost can train here on the GPU: built with CUDA, and one tiny round really runs there
    (XGBoost silently falls back to CPU when it cannot)."""
    try:
        built_with_cuda = bool(xgb.build_info().get("USE_CUDA"))
    except Exception:  # very old builds lack build_info
        built_with_cuda = False
    if not built_with_cuda:
        return False, "xgboost is built without CUDA"
    rng = np.random.default_rng(0)
    X = rng.random((32, 2))
    y = np.tile([0, 1], 16)
    probe = xgb.XGBClassifier(n_estimators=1, max_depth=1, tree_method="hist", device="cuda", n_jobs=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe.fit(X, y)
    except Exception as exc:
        return False, f"CUDA probe failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if _device_of(probe) != "cuda":
        return False, "CUDA probe: XGBoost found no usable GPU and fell back to CPU"
    return True, "CUDA probe ok"


# --------------------------------------------------------------------------- training


def carve_validation(
    X: pd.DataFrame, y: np.ndarray, hp: HyperParameters
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame | None, np.ndarray | None]:
    if hp.early_stopping_rounds == 0:
        log("early stopping: disabled (early_stopping_rounds=0); training on all train rows")
        return X, y, None, None
    n = len(y)
    n_val = math.ceil(n * hp.validation_fraction)
    if n_val < 2 or n - n_val < 2 or np.bincount(y, minlength=2).min() < 2:
        warn(f"too few train rows ({n}) for a stratified validation split; early stopping disabled")
        return X, y, None, None
    try:
        X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=n_val, random_state=hp.seed, stratify=y)
    except ValueError as exc:
        warn(f"validation split impossible ({exc}); early stopping disabled")
        return X, y, None, None
    log(
        f"early stopping: patience {hp.early_stopping_rounds} rounds on a seeded stratified validation "
        f"split of TRAIN ({len(y_fit)} fit / {len(y_val)} validation rows); holdout untouched"
    )
    return X_fit, y_fit, X_val, y_val


# --------------------------------------------------------------------------- distributed and checkpoints


@contextlib.contextmanager
def collective(env: TrainingEnvironment):
    """Join the job's hosts in one XGBoost collective (``xgboost.collective``, Rabit): the first host
    runs the tracker at :meth:`~contract.TrainingEnvironment.tracker_address`; a single host trains alone.

    XGBoost then builds one model from every host's shard: histograms and the evaluation metric are
    all-reduced each round, so early stopping decides the same on every host. A host that dies makes
    the others fail at their next all-reduce (``dmlc_timeout``); the platform stops the rest.
    """
    if env.world_size <= 1:
        yield
        return
    from xgboost.tracker import RabitTracker

    host, port = env.tracker_address()
    tracker = None
    if env.rank == 0:
        bind = socket.gethostbyname(host)
        tracker = RabitTracker(n_workers=env.world_size, host_ip=bind, port=port, sortby="task", timeout=300)
        tracker.start()
        log(f"distributed: tracker on {bind}:{port} for {env.world_size} hosts {list(env.hosts)}")
    args = {
        "dmlc_tracker_uri": host,
        "dmlc_tracker_port": port,
        "dmlc_task_id": str(env.rank),
        "dmlc_retry": 30,
        "dmlc_timeout": 120,
    }
    with xgb.collective.CommunicatorContext(**args):
        log(f"distributed: host {env.current_host} is rank {xgb.collective.get_rank()} of {xgb.collective.get_world_size()}")
        yield
    if tracker is not None:
        tracker.wait_for(60)


def latest_checkpoint(checkpoint_dir: Path | None) -> tuple[Path, int] | None:
    """The newest ``checkpoint-<rounds>.json`` and its round count; ``None`` when there is none."""
    if checkpoint_dir is None or not checkpoint_dir.is_dir():
        return None
    found = []
    for path in checkpoint_dir.glob("checkpoint-*.json"):
        stem = path.stem.removeprefix("checkpoint-")
        if stem.isdigit():
            found.append((int(stem), path))
    if not found:
        return None
    rounds, path = max(found)
    return path, rounds


def load_checkpoint(path: Path, rounds: int) -> xgb.Booster:
    try:
        booster = xgb.Booster()
        booster.load_model(path)
    except Exception as exc:  # XGBoostError, OSError, a truncated file
        raise TrainingError(f"checkpoint {path} cannot be read: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if booster.num_boosted_rounds() != rounds:
        raise TrainingError(
            f"checkpoint {path} cannot be read: it holds {booster.num_boosted_rounds()} rounds, its name says {rounds}"
        )
    return booster


class CheckpointCallback(xgb.callback.TrainingCallback if _IMPORT_ERROR is None else object):  # type: ignore[misc]
    """Every ``interval`` rounds, the first host writes ``checkpoint-<rounds>.json`` (atomically) to the
    contract's checkpoint dir, which the platform keeps across a spot interruption, and drops older ones."""

    def __init__(self, directory: Path, interval: int, write: bool) -> None:
        super().__init__()
        self.directory, self.interval, self.write = directory, interval, write
        self.written = 0

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        rounds = model.num_boosted_rounds()
        if self.write and rounds % self.interval == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".checkpoint-{rounds:06d}.tmp.json"
            model.save_model(tmp)
            os.replace(tmp, self.directory / f"checkpoint-{rounds:06d}.json")
            self.written += 1
            for old in self.directory.glob("checkpoint-*.json"):
                stem = old.stem.removeprefix("checkpoint-")
                if stem.isdigit() and int(stem) < rounds - self.interval:
                    old.unlink(missing_ok=True)
        return False


def train_model(
    X: pd.DataFrame,
    y: np.ndarray,
    hp: HyperParameters,
    device: str,
    env: TrainingEnvironment | None = None,
    progress: dict[str, Any] | None = None,
) -> tuple[xgb.XGBClassifier, int, float]:
    """Fit the classifier; resume from the newest checkpoint in ``env.checkpoint_dir`` when there is one.

    :param progress: filled with ``resumed_from_round``, ``rounds_trained`` and ``checkpoints_written``.
    """
    progress = {} if progress is None else progress
    X_fit, y_fit, X_val, y_val = carve_validation(X, y, hp)
    early = X_val is not None
    params: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "device": device,
        "n_estimators": hp.n_estimators,
        "max_depth": hp.max_depth,
        "learning_rate": hp.learning_rate,
        "subsample": hp.subsample,
        "colsample_bytree": hp.colsample_bytree,
        "min_child_weight": hp.min_child_weight,
        "reg_lambda": hp.reg_lambda,
        "random_state": hp.seed,
    }
    if early:
        params["early_stopping_rounds"] = hp.early_stopping_rounds
    checkpoint_dir = env.checkpoint_dir if env is not None else None
    resume_from, done_rounds = None, 0
    if (found := latest_checkpoint(checkpoint_dir)) is not None:
        resume_from = load_checkpoint(*found)
        done_rounds = found[1]
        log(f"checkpoint: resuming from {found[0]} ({done_rounds} of {hp.n_estimators} rounds done)")
    callback = None
    if checkpoint_dir is not None and hp.checkpoint_interval > 0:
        callback = CheckpointCallback(checkpoint_dir, hp.checkpoint_interval, env is None or env.rank == 0)
        params["callbacks"] = [callback]
    remaining = max(0, hp.n_estimators - done_rounds)
    progress.update(resumed_from_round=done_rounds, rounds_trained=0, checkpoints_written=0)
    if resume_from is not None and remaining == 0:
        log("checkpoint: every round was already trained; the checkpoint is the model")
        model = xgb.XGBClassifier(**{k: v for k, v in params.items() if k not in ("callbacks", "early_stopping_rounds")})
        model.load_model(bytearray(resume_from.save_raw("json")))
        return model, done_rounds - 1, 0.0
    params["n_estimators"] = remaining
    model = xgb.XGBClassifier(**params)
    log(f"training: XGBClassifier on {len(y_fit)} rows x {X_fit.shape[1]} features, device={device}")
    started = time.perf_counter()
    if early:
        model.fit(X_fit, y_fit, eval_set=[(X_val, y_val)], verbose=max(1, hp.n_estimators // 10), xgb_model=resume_from)
    else:
        model.fit(X_fit, y_fit, verbose=False, xgb_model=resume_from)
    seconds = time.perf_counter() - started
    rounds = model.get_booster().num_boosted_rounds()
    progress.update(rounds_trained=rounds - done_rounds, checkpoints_written=callback.written if callback else 0)
    best = int(model.best_iteration) if early else rounds - 1
    if early:
        log(
            f"training: {rounds} rounds run, best iteration {best} "
            f"(validation logloss {float(model.best_score):.5f})"
        )
    else:
        log(f"training: {rounds} rounds run")
    return model, best, seconds


def finalize_model(model: xgb.XGBClassifier, best_iteration: int) -> xgb.XGBClassifier:
    """A CPU classifier holding exactly the trees up to the best iteration."""
    booster = model.get_booster()
    keep = best_iteration + 1
    if booster.num_boosted_rounds() > keep:
        booster = booster[:keep]
    final = xgb.XGBClassifier()
    final.load_model(bytearray(booster.save_raw("json")))
    return final


# --------------------------------------------------------------------------- metrics


def _finite_or_none(name: str, value: Any, reasons: dict[str, str]) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        reasons.setdefault(name, f"not a number ({value!r})")
        return None
    if not math.isfinite(number):
        reasons.setdefault(name, "not finite")
        return None
    return number


def compute_metrics(y_true: np.ndarray, proba: np.ndarray) -> tuple[dict[str, float | None], dict[str, str]]:
    y_pred = (proba >= THRESHOLD).astype("int64")
    n_pos = int(y_true.sum())
    n_neg = int(len(y_true) - n_pos)
    n_pred_pos = int(y_pred.sum())
    reasons: dict[str, str] = {}
    if n_pos == 0 or n_neg == 0:
        reasons["roc_auc"] = f"holdout has a single class ({n_pos} positive, {n_neg} negative)"
    if n_pos == 0:
        reasons["pr_auc"] = "holdout has no positive rows"
        reasons["recall"] = "holdout has no positive rows"
    if n_pred_pos == 0:
        reasons["precision"] = f"no holdout row scored >= {THRESHOLD}"
    if n_pos == 0 and n_pred_pos == 0:
        reasons["f1"] = "no positives, actual or predicted"

    calculators = {
        "roc_auc": lambda: roc_auc_score(y_true, proba),
        "pr_auc": lambda: average_precision_score(y_true, proba),
        "accuracy": lambda: accuracy_score(y_true, y_pred),
        "precision": lambda: precision_score(y_true, y_pred, zero_division=np.nan),
        "recall": lambda: recall_score(y_true, y_pred, zero_division=np.nan),
        "f1": lambda: f1_score(y_true, y_pred, zero_division=np.nan),
        "log_loss": lambda: log_loss(y_true, proba, labels=[0, 1]),
        "brier": lambda: float(np.mean((proba - y_true) ** 2)),
    }
    assert tuple(calculators) == METRICS, "METRICS must list exactly the metrics computed here"
    metrics: dict[str, float | None] = {}
    for name, calculate in calculators.items():
        if name in reasons:
            metrics[name] = None
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                metrics[name] = _finite_or_none(name, calculate(), reasons)
        except Exception as exc:
            reasons[name] = f"{type(exc).__name__}: {exc}"
            metrics[name] = None
    return metrics, reasons


# --------------------------------------------------------------------------- main


def run(argv: list[str]) -> None:
    if _IMPORT_ERROR is not None:
        raise TrainingError(f"missing dependency: {_IMPORT_ERROR}")
    total_started = time.perf_counter()
    log(
        f"train.py: python {sys.version.split()[0]}, xgboost {xgb.__version__}, "
        f"pandas {pd.__version__}, numpy {np.__version__}"
    )
    env = TrainingEnvironment.from_environ(default_channels=CHANNELS)
    hp = resolve_hyperparameters(HyperParameters, argv, validate=hyperparameter_problems)
    model_dir = env.model_dir

    rank, world = env.rank, env.world_size
    train_df = load_channel(env.channel("train"), "train", shard=(rank, world))
    test_df = load_channel(env.channel("test"), "test")
    y_train = extract_target(train_df, hp, "train")
    y_test = extract_target(test_df, hp, "test")
    if len(np.unique(y_train)) < 2:
        raise TrainingError(f"train target {hp.target_column!r} has a single class ({int(y_train[0])}) only")
    features = feature_columns_of(train_df, hp)
    X_train = build_features(train_df, features, hp, "train")
    X_test = build_features(test_df, features, hp, "test")
    positive_rate_train = float(y_train.mean())
    positive_rate_test = float(y_test.mean())
    log(
        f"data: X_train {X_train.shape}, X_test {X_test.shape}, {len(features)} features; "
        f"positive rate train {positive_rate_train:.4f}, test {positive_rate_test:.4f}"
    )

    device = choose_device(hp.device, usable_gpu=_cuda_works)
    progress: dict[str, Any] = {}
    host_seconds = [0.0] * world
    with collective(env):
        model, best_iteration, train_seconds = train_model(X_train, y_train, hp, device, env, progress)
        if world > 1:
            # Every host's training time, gathered on all of them (each fills its own slot of a sum).
            mine = np.zeros(world)
            mine[rank] = train_seconds
            host_seconds = [float(v) for v in xgb.collective.allreduce(mine, xgb.collective.Op.SUM)]
            n_train_total = int(xgb.collective.allreduce(np.array([len(y_train)], dtype=np.float64), xgb.collective.Op.SUM)[0])
        else:
            host_seconds = [train_seconds]
            n_train_total = int(len(y_train))
    if rank != 0:
        log(f"training: host {env.current_host} done in {train_seconds:.2f}s; the first host writes the model")
        return
    device_used = _device_of(model)
    if device_used != device:
        warn(f"XGBoost trained on {device_used} although {device} was chosen")
    log(f"training: finished in {train_seconds:.2f}s on {device_used}")

    final = finalize_model(model, best_iteration)
    model_dir.mkdir(parents=True, exist_ok=True)
    model_path = model_dir / "model.json"
    tmp_model = model_dir / ".model.json.tmp.json"
    final.save_model(tmp_model)
    os.replace(tmp_model, model_path)
    write_json(model_dir / "feature_columns.json", features)
    log(f"model: wrote {model_path} ({best_iteration + 1} trees) and feature_columns.json")

    # Score the holdout with the artifact as written, so the metrics describe exactly that file.
    saved = xgb.XGBClassifier()
    saved.load_model(model_path)
    proba = saved.predict_proba(X_test)[:, 1]
    model.set_params(device="cpu")
    if not np.allclose(proba, model.predict_proba(X_test)[:, 1], atol=1e-5):
        warn("saved model's holdout scores differ from the in-memory model's")

    metrics, reasons = compute_metrics(y_test, proba)
    for name, why in reasons.items():
        log(f"metrics: {name} is null: {why}")
    info = {
        "device": device_used,
        "n_train": n_train_total,
        "n_test": int(len(y_test)),
        "n_features": len(features),
        "best_iteration": int(best_iteration),
        "train_seconds": round(float(train_seconds), 3),
        "positive_rate_train": positive_rate_train,
        "positive_rate_test": positive_rate_test,
        "threshold": THRESHOLD,
        "xgboost_version": str(xgb.__version__),
        "hosts": list(env.hosts),
        "host_train_seconds": {h: round(t, 3) for h, t in zip(env.hosts, host_seconds, strict=True)},
        "resumed_from_round": int(progress.get("resumed_from_round", 0)),
        "rounds_trained": int(progress.get("rounds_trained", 0)),
        "checkpoints_written": int(progress.get("checkpoints_written", 0)),
    }
    metrics_path = write_metrics(env, metrics, info)
    shown = ", ".join(f"{k}={'null' if v is None else f'{v:.4f}'}" for k, v in metrics.items())
    log(f"metrics (holdout, n={len(y_test)}, threshold {THRESHOLD}): {shown}")
    log(f"metrics: wrote {metrics_path}")
    log(f"done in {time.perf_counter() - total_started:.2f}s")


def main(argv: list[str] | None = None) -> int:
    return run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
