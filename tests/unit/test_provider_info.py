"""The provider info Airflow discovers through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from airflow_retrain.provider import get_provider_info

PACKAGE = Path(__file__).resolve().parents[2] / "plugins" / "airflow_retrain"


def _schema(name: str) -> dict:
    return json.loads(resources.files("airflow").joinpath(name).read_text())


def test_provider_info_validates_against_airflows_runtime_schema():
    # The validator ProvidersManager builds for every installed provider.
    from airflow.providers_manager import _create_provider_info_schema_validator

    validator = _create_provider_info_schema_validator()
    assert list(validator.iter_errors(get_provider_info())) == []


def test_config_and_integrations_meet_the_stricter_provider_yaml_schema():
    # provider.yaml.schema.json is what Airflow's own providers must meet (no unknown keys, integration
    # tags from a fixed list, every option with description/version_added/type/example/default).
    strict = _schema("provider.yaml.schema.json")
    info = get_provider_info()
    # Our own integration has no external docs URL to give until the project publishes its docs.
    info["integrations"] = [i for i in info["integrations"] if i["integration-name"] != info["name"]]
    for key in ("config", "integrations", "connection-types", "extra-links", "triggers", "hooks", "operators"):
        jsonschema.validate(info[key], {**strict["properties"][key], "definitions": strict.get("definitions", {})})
    info = get_provider_info()
    names = {i["integration-name"] for i in info["integrations"]}
    for section in ("operators", "hooks", "triggers"):
        assert {e["integration-name"] for e in info[section]} <= names, section


def test_a_broken_option_is_rejected_by_the_schema():
    from airflow.providers_manager import _create_provider_info_schema_validator

    info = get_provider_info()
    del info["config"]["retrain"]["options"]["home"]["default"]
    with pytest.raises(jsonschema.ValidationError, match="'default' is a required property"):
        _create_provider_info_schema_validator().validate(info)


def test_every_retrain_option_the_package_reads_is_declared():
    read: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        read |= set(re.findall(r'_airflow_option\(\s*"(\w+)"', text))
        read |= set(re.findall(r'conf\w*(?:\.get\w*)?\(\s*"retrain",\s*"(\w+)"', text))
    # Retired for one release (a deprecation warning names its successor); declaring it would give it a
    # default, and a default is indistinguishable from a deployment that set it.
    read -= {"deferrable"}
    declared = set(get_provider_info()["config"]["retrain"]["options"])
    assert read, "found no [retrain] option reads: the patterns above are stale"
    assert read <= declared, f"read but not declared under config.retrain: {sorted(read - declared)}"


def test_modules_and_classes_named_in_the_provider_info_import():
    import importlib

    info = get_provider_info()
    modules = [m for section in ("operators", "hooks", "triggers") for e in info[section] for m in e["python-modules"]]
    classes = [c["hook-class-name"] for c in info["connection-types"]] + info["extra-links"]
    classes += [p["plugin-class"] for p in info["plugins"]]
    for name in modules:
        importlib.import_module(name)
    for path in classes:
        module, _, attr = path.rpartition(".")
        assert hasattr(importlib.import_module(module), attr), path


def test_providers_manager_loads_our_provider_hooks_and_config():
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    assert "airflow-retrain" in pm.providers  # discovery validates each provider against the schema, or raises
    (duck,) = [m for m in pm.iter_connection_type_hook_ui_metadata() if m.connection_type == "retrain_duckdb"]
    assert duck.hook_class_name == "airflow_retrain.hooks.duckdb.RetrainDuckDBHook"
    assert duck.hook_name == "DuckDB file (airflow-retrain)"
    # The connection form's behaviour passed Airflow's form schema (a failing one is dropped with a warning).
    assert duck.field_behaviour["relabeling"] == {"host": "Database file path"}
    assert "airflow_retrain.links.dbt.DbtDocsLink" in pm.extra_links_class_names
    configs = dict(pm.provider_configs)
    assert set(configs["airflow-retrain"]["retrain"]["options"]) == {"home", "state_dir", "airflow_api_url"}


def test_our_connection_type_clashes_with_no_installed_provider():
    from airflow.providers_manager import ProvidersManager

    owners: dict[str, list[str]] = {}
    for package, provider in ProvidersManager().providers.items():
        for conn in provider.data.get("connection-types", []):
            owners.setdefault(conn["connection-type"], []).append(package)
    for conn in get_provider_info()["connection-types"]:
        assert owners[conn["connection-type"]] == ["airflow-retrain"], conn["connection-type"]
