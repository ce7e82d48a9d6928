"""What a dbt project declares, read from its files without running dbt: model names and contract columns.

Used at DAG-parse time (the data gate's contract, the spec's checks), so it reads only YAML and file names.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def dbt_model_names(project_dir: Path) -> set[str]:
    """Model names of a dbt project, read from its files (only while no manifest is cached)."""
    names: set[str] = set()
    models = project_dir / "models"
    for pattern in ("*.sql", "*.py"):
        names.update(p.stem for p in models.rglob(pattern))
    return names



def dbt_contract_columns(project_dir: Path, model: str) -> dict[str, str | None] | None:
    """Column -> ``data_type`` of a dbt model, read from its YAML (never by running dbt); ``None`` when
    the model has no YAML entry with columns."""
    models = project_dir / "models"
    if not models.is_dir():
        return None
    for path in sorted([*models.rglob("*.yml"), *models.rglob("*.yaml")]):
        try:
            text = path.read_text()
        except OSError:
            continue
        if model not in text:  # parse only the files that can describe the model (parse time matters)
            continue
        try:
            doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        except yaml.YAMLError:
            continue
        for entry in doc.get("models") or []:
            if isinstance(entry, dict) and entry.get("name") == model and entry.get("columns"):
                return {c["name"]: c.get("data_type") for c in entry["columns"] if isinstance(c, dict) and "name" in c}
    return None

