"""Small inputs for training jobs on the fake cloud: churn-schema Parquet and a packed source dir."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
CHURN_SOURCE_DIR = ROOT / "include" / "training" / "churn"

_BINARY_FEATURES = [
    "is_female", "is_senior_citizen", "has_partner", "has_dependents", "contract_one_year",
    "contract_two_year", "has_paperless_billing", "payment_electronic_check", "payment_mailed_check",
    "payment_bank_transfer", "payment_credit_card", "has_phone_service", "has_multiple_lines",
    "internet_dsl", "internet_fiber_optic", "internet_none", "has_online_security", "has_online_backup",
    "has_device_protection", "has_tech_support", "has_streaming_tv", "has_streaming_movies",
]  # fmt: skip


def churn_frame(rows: int, seed: int) -> pd.DataFrame:
    """Rows with the columns of the dbt mart ``churn_features`` and a learnable label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"customer_id": [f"C{seed:02d}-{i:05d}" for i in range(rows)]})
    for name in _BINARY_FEATURES:
        frame[name] = rng.integers(0, 2, rows).astype("int32")
    frame["tenure_months"] = rng.integers(0, 72, rows).astype("int32")
    frame["monthly_charges"] = rng.uniform(18, 120, rows).round(2)
    frame["total_charges"] = (frame["monthly_charges"] * frame["tenure_months"]).round(2)
    logit = 1.5 - 0.06 * frame["tenure_months"] + 1.2 * frame["internet_fiber_optic"] - 1.0 * frame["contract_two_year"]
    frame["churned"] = (rng.uniform(0, 1, rows) < 1 / (1 + np.exp(-logit))).astype("int32")
    return frame


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def sourcedir_tar_gz(folder: Path, extra_files: dict[str, str] | None = None) -> bytes:
    """Pack ``folder`` the way the SageMaker SDK does: its files at the archive's top level."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if "__pycache__" in path.parts:
                continue
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
        for name, text in (extra_files or {}).items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def framework_hyperparameters(program: str, submit_uri: str, **user: object) -> dict[str, str]:
    """HyperParameters as the SageMaker SDK writes them for framework containers: JSON-encoded values."""
    hps = {"sagemaker_program": program, "sagemaker_submit_directory": submit_uri, **user}
    return {key: json.dumps(value) for key, value in hps.items()}
