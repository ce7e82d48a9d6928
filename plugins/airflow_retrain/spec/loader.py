"""Reading spec files: YAML with unique keys and no NUL bytes, validated into a :class:`PipelineSpec`.

:func:`load_spec` loads one file and raises one :class:`SpecError` naming the file and every field that is
wrong; :func:`load_specs` loads a folder, reports each broken file without stopping the others, and holds
the rule that one registered model belongs to one spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from airflow_retrain.config import project_root_for
from airflow_retrain.spec.checks import check_spec
from airflow_retrain.spec.models import PipelineSpec, SpecError


def _loc_part(part: Any) -> str:
    """One step of a field path; a key that is not a plain name is quoted, so the field stays readable."""
    text = str(part)
    return text if re.fullmatch(r"[A-Za-z0-9_\-]+", text) else repr(text)


def format_validation_error(err: ValidationError) -> list[str]:
    """One ``<field.path>: <what is wrong>`` line per pydantic error, in a spec's words."""
    problems = []
    for item in err.errors():
        field = ".".join(_loc_part(p) for p in item["loc"]) or "<top level>"
        msg = item["msg"]
        if item["type"] == "missing":
            msg = "required field is missing"
        elif item["type"] == "extra_forbidden":
            msg = "unknown field"
        elif item["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif item["type"] in ("int_type", "float_type") and isinstance(item.get("input"), bool):
            # YAML's true/false are not 1/0: a boolean where a number belongs is a mistake, not a count
            msg = f"{msg}, got {str(item['input']).lower()} (booleans are not numbers)"
        problems.append(f"{field}: {msg}")
    return problems


# The name the teardown policy loader imported before the spec became a package.
_format_validation_error = format_validation_error


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, not "last one wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)  # resolve `<<` merge keys first: overriding a merged key is allowed
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"unhashable key {key!r}", key_node.start_mark
                ) from None
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {key!r} (first at line {first})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(path: Path) -> Any:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise SpecError(path, [f"cannot read: {e.strerror}"]) from None
    except UnicodeDecodeError as e:
        raise SpecError(path, [f"<file>: not UTF-8 text (byte {e.start})"]) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(path, [f"not valid YAML{where}: {getattr(e, 'problem', None) or e}"]) from None
    except RecursionError:
        raise SpecError(path, ["not valid YAML: nested too deeply"]) from None


def _nul_bytes(node: Any, path: str = "") -> list[str]:
    """Fields whose text holds a NUL byte: Postgres (Airflow's metadata DB) cannot store one anywhere."""
    found = []
    if isinstance(node, str):
        if "\x00" in node:
            found.append(f"{path or '<top level>'}: contains a NUL byte")
    elif isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{_loc_part(key)}" if path else _loc_part(key)
            if isinstance(key, str) and "\x00" in key:
                found.append(f"{where}: the key contains a NUL byte")
            found += _nul_bytes(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _nul_bytes(value, f"{path}.{i}")
    return found


def load_spec(path: Path | str) -> PipelineSpec:
    """Load and validate one spec file; raise :class:`SpecError` naming the file and fields."""
    path = Path(path)
    raw = _parse_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(path, ["<top level>: expected a mapping of fields"])
    if bad := [k for k in raw if not isinstance(k, str)]:
        raise SpecError(path, [f"<top level>: field names must be text, got {bad[0]!r}"])
    if nul := _nul_bytes(raw):
        raise SpecError(path, nul)
    root = project_root_for(path)
    try:
        spec = PipelineSpec.model_validate({**raw, "source_path": str(path.resolve()), "root": str(root)})
    except ValidationError as e:
        raise SpecError(path, format_validation_error(e)) from None
    if problems := check_spec(spec):
        raise SpecError(path, problems)
    return spec


def spec_files(directory: Path | str) -> list[Path]:
    """The spec files of a folder: ``*.yaml``/``*.yml`` in any letter case, hidden (editor) files aside."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
    )


@dataclass(frozen=True)
class LoadedSpecs:
    specs: list[PipelineSpec]
    errors: dict[str, SpecError]


def load_specs(directory: Path | str) -> LoadedSpecs:
    """Load every ``*.yaml``/``*.yml`` spec in a folder; a broken file is reported, never fatal."""
    specs: list[PipelineSpec] = []
    errors: dict[str, SpecError] = {}
    seen: dict[str, str] = {}
    # A registered model belongs to one spec: two would move one champion alias from two DAGs (and two
    # rollback DAGs). Keyed by the MLflow connection too: one name on two registries is two models.
    models: dict[tuple[str, str], str] = {}
    for path in spec_files(directory):
        try:
            spec = load_spec(path)
        except SpecError as e:
            errors[str(path)] = e
            continue
        except Exception as e:  # noqa: BLE001 - one file's surprise must not hide the other pipelines
            errors[str(path)] = SpecError(path, [f"<file>: could not be validated: {type(e).__name__}: {e}"])
            continue
        if spec.name in seen:
            errors[str(path)] = SpecError(path, [f"name: {spec.name!r} is already used by {seen[spec.name]}"])
            continue
        model = (spec.registry.connection_id, spec.registry.model_name)
        if model in models:
            errors[str(path)] = SpecError(
                path,
                [
                    f"registry.model_name: {spec.registry.model_name!r} (connection {model[0]!r}) is already the "
                    f"registered model of {models[model]}; a registered model belongs to one pipeline, so that two "
                    "DAGs never move one champion -- give this pipeline its own model_name"
                ],
            )
            continue
        seen[spec.name] = str(path)
        models[model] = str(path)
        specs.append(spec)
    return LoadedSpecs(specs, errors)
