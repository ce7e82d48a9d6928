"""Where airflow-retrain finds its project and keeps its state, and its ``[retrain]`` options.

The bottom of the package: it imports nothing from ``airflow_retrain``, so every module that needs a path
or an option imports it from here at module top (no lazy import to dodge a circle).

- :func:`retrain_home`: the project folder (``include/pipelines``, the dbt project, training scripts);
- :func:`project_root_for`: the root a spec file's relative paths resolve against;
- :func:`state_dir`: scratch data, local jobs, the embedded warehouse, registry and cost ledger;
- :data:`EMBEDDED_WAREHOUSE_POOL`: the pool that serialises every pipeline's use of the embedded DuckDB.

Each is, in order: an environment variable (``RETRAIN_HOME``, ``RETRAIN_STATE_DIR``), Airflow's
``[retrain]`` option of the same name (``home``, ``state_dir``; ``AIRFLOW__RETRAIN__<KEY>`` works too),
then a default derived from the checkout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: Pool that serialises dbt and the export of every pipeline on the embedded DuckDB warehouse.
EMBEDDED_WAREHOUSE_POOL = "retrain_embedded_warehouse"


def _airflow_option(key: str) -> str | None:
    """``[retrain] <key>`` of the running Airflow's configuration (``AIRFLOW__RETRAIN__<KEY>`` works too).

    Read only when Airflow's configuration is already imported (every Airflow process), so a plain script
    that loads a spec never pays for importing Airflow.
    """
    configuration = sys.modules.get("airflow.configuration")
    if configuration is None:
        return None
    try:
        value = configuration.conf.get("retrain", key, fallback=None)
    except Exception:  # noqa: BLE001 - a config without the section
        return None
    return value or None


def retrain_home() -> Path | None:
    """The project folder holding ``include/pipelines``, the dbt project and training scripts.

    In order: ``RETRAIN_HOME``; Airflow's ``[retrain] home`` option; the checkout this package was
    installed from in editable mode (the folder above ``plugins/`` when it holds ``include/pipelines``).
    ``None`` when none applies -- an installed wheel needs ``RETRAIN_HOME`` or ``[retrain] home``.
    """
    if env := os.environ.get("RETRAIN_HOME"):
        return Path(env).resolve()
    if option := _airflow_option("home"):
        return Path(option).resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "include" / "pipelines").is_dir():
        return checkout
    return None


def project_root_for(spec_path: Path) -> Path:
    """The project root a spec file's relative paths (``dbt.project_dir``, ``training.entry_point``) resolve
    against: ``RETRAIN_HOME``, ``[retrain] home``, else the folder that holds the spec's ``include/``."""
    if env := os.environ.get("RETRAIN_HOME"):
        return Path(env).resolve()
    if option := _airflow_option("home"):
        return Path(option).resolve()
    spec_path = spec_path.resolve()
    for parent in spec_path.parents:
        if parent.name == "include":
            return parent.parent
    return spec_path.parent


def state_dir(root: Path | str | None = None) -> Path:
    """Where runs keep scratch data, local jobs and the embedded warehouse/registry."""
    if env := os.environ.get("RETRAIN_STATE_DIR"):
        return Path(env).resolve()
    if option := _airflow_option("state_dir"):
        return Path(option).resolve()
    base = Path(root) if root else retrain_home()
    if base is None:  # never the current directory: a worker's cwd is anybody's guess
        raise RuntimeError(
            "airflow-retrain has no state dir: set RETRAIN_STATE_DIR (or Airflow's [retrain] state_dir), or "
            "RETRAIN_HOME (or [retrain] home) to use <home>/.local"
        )
    return (base / ".local").resolve()
