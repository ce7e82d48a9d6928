"""The repository tracks no generated state: databases belong in the state dir (``.local/``), never in git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATABASE_PATTERNS = ("*.db", "*.duckdb", "*.sqlite", "*.sqlite3", "mlruns/*")


def test_no_database_or_mlflow_store_is_tracked():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an installed copy has nothing tracked to check)")
    tracked = subprocess.run(
        ["git", "ls-files", "--", *DATABASE_PATTERNS], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == [], f"generated state is committed (git rm it; .gitignore covers these): {tracked}"
