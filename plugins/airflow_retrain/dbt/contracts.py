"""What a dbt project declares about a model: its name (from files) and its dbt contract (from the manifest).

A model is a contract only when dbt says so: ``contract: {enforced: true}`` in its config, read from the
cached manifest (``nodes[...].config.contract.enforced``). Columns a YAML file lists for docs and tests are
not a contract, and the data gate never treats them as one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from airflow_retrain.dbt.manifest import ManifestError, ManifestIndex, load_index


def dbt_model_names(project_dir: Path) -> set[str]:
    """Model names of a dbt project, read from its files (while no fresh manifest is cached)."""
    names: set[str] = set()
    models = project_dir / "models"
    for pattern in ("*.sql", "*.py"):
        names.update(p.stem for p in models.rglob(pattern))
    return names


@dataclass(frozen=True)
class ModelContract:
    """A model's dbt contract, or why there is none.

    :param columns: column -> ``data_type`` when the contract is enforced, else ``None``.
    :param note: where the contract was read, or why the contract check is skipped.
    :param fresh: read from a manifest of the project's current files (not a stale one).
    """

    model: str
    columns: dict[str, str | None] | None
    note: str
    fresh: bool = True


def model_contract(index: ManifestIndex, model: str) -> ModelContract:
    """The contract of ``model`` in ``index`` (the project's own package first)."""
    candidates = [n for n in index.nodes.values() if n["resource_type"] == "model" and n["name"] == model]
    candidates.sort(key=lambda n: n.get("package_name") != index.project_name)
    where = f"manifest fingerprint {index.fingerprint}" + (" (stale)" if index.stale else "")
    if not candidates:
        return ModelContract(model, None, f"model {model!r} is not in the dbt {where}", not index.stale)
    node = candidates[0]
    if not node.get("contract_enforced"):
        documented = len(node.get("columns") or {})
        return ModelContract(
            model,
            None,
            f"dbt model {model!r} has no enforced contract (config contract.enforced is not true; its YAML "
            f"documents {documented} column(s), which are docs, not a contract) in the {where}",
            not index.stale,
        )
    columns = dict(node.get("columns") or {})
    return ModelContract(model, columns, f"dbt contract of {model!r} ({len(columns)} columns, {where})", not index.stale)


def project_contract(project_dir: str | os.PathLike, model: str) -> ModelContract:
    """:func:`model_contract` from the project's cached manifest (a stale one is used and marked)."""
    try:
        index = load_index(project_dir, allow_stale=True)
    except ManifestError as e:
        return ModelContract(model, None, f"no dbt manifest to read the contract of {model!r} from: {e}", False)
    return model_contract(index, model)
