"""The DAG files the wheel ships (``airflow_retrain.example_dags``) are the repository's ``dags/``: all of them,
byte for byte, so a deployment that copies them runs what this repository tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_example_dag_files_are_all_of_the_repositorys():
    from airflow_retrain.example_dags import DAG_FILES, FOLDER, paths

    assert sorted(DAG_FILES) == sorted(p.name for p in (ROOT / "dags").glob("*.py"))
    assert sorted(p.name for p in FOLDER.glob("*.py") if p.name != "__init__.py") == sorted(DAG_FILES)
    for name in DAG_FILES:
        assert (FOLDER / name).read_text() == (ROOT / "dags" / name).read_text(), name
    assert paths() == [FOLDER / name for name in DAG_FILES] and all(p.is_file() for p in paths())
