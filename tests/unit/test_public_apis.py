"""The registry code uses MLflow's and Airflow's public APIs only, so the lock needs no pin below MLflow 4."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "plugins" / "airflow_retrain"
OWNED = [
    "hooks/mlflow.py", "hooks/mlflow_client.py", "gates/_mlflow.py", *sorted(
        str(p.relative_to(PACKAGE)) for p in [*PACKAGE.glob("operators/registry*.py"), *PACKAGE.glob("registry/*.py")]
    ),
]
# A private module or name of MLflow (``mlflow.tracking._tracking_service``, ``from mlflow.x import _y``), a
# private method of one of its objects (``store._call_endpoint``), or Airflow internals used from tasks.
PRIVATE = [
    re.compile(r"\bmlflow(\.\w+)*\._\w+"),
    re.compile(r"from mlflow[\w.]* import \(?[^)\n]*\b_\w+"),
    re.compile(r"\._(call_endpoint|tracking_client|registry_client\w*|get_artifact_repo|METHOD_TO_INFO)\b"),
    re.compile(r"\bairflow(\.\w+)*\._\w+"),
    re.compile(r"\bfrom airflow\.(models|utils)\b|\bimport airflow\.(models|utils)\b"),
]


@pytest.mark.parametrize("relative", OWNED)
def test_no_private_mlflow_or_airflow_api(relative):
    source = (PACKAGE / relative).read_text()
    found = [m.group(0) for pattern in PRIVATE for m in pattern.finditer(source)]
    assert not found, f"{relative} uses private APIs: {found}"


def test_the_mlflow_pin_allows_every_3_x_from_3_17():
    pyproject = (PACKAGE.parents[1] / "pyproject.toml").read_text()
    assert re.search(r'"mlflow>=3\.17,<4"', pyproject), "pyproject.toml must require mlflow>=3.17,<4"
