"""Selection is dbt's own (``dbt ls`` through ``dbtRunner`` on the cached manifest), cached per fingerprint
and selection; DAG parsing reads the cache and never runs dbt."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from airflow_retrain.dbt.manifest import cache_dir as index_dir
from airflow_retrain.dbt.manifest import load_index
from airflow_retrain.dbt.render import plan_group
from airflow_retrain.dbt.selection import cache_selection, cached_selection, selection_path

pytestmark = pytest.mark.slow  # the fixtures parse a dbt project and run `dbt ls`: seconds each


def _select(project, select=None, exclude=None, selector=None):
    return cache_selection(project, load_index(project).fingerprint, select, exclude, selector)


def test_yaml_selector_and_graph_operators_are_dbts(shop_project):
    # selectors.yml: tag:mart with parents, minus events_daily -- a YAML selector the old port read by hand
    nightly = set(_select(shop_project, selector="nightly_shop").unique_ids)
    assert "model.shop.customers" in nightly and "model.shop.stg_orders" in nightly  # parents: true
    assert "model.shop.events_daily" not in nightly
    assert "seed.shop.raw_orders" in nightly  # a seed upstream of a mart
    parents = set(_select(shop_project, ["+customers"], ["raw_payments"]).unique_ids)
    assert "model.shop.stg_customers" in parents and "seed.shop.raw_payments" not in parents
    assert any(u.startswith("test.shop.") for u in parents)  # dbt's eager indirect selection of tests
    # a method the old port refused (it needs dbt); on a manifest dbt answers it
    assert "model.shop.orders" in _select(shop_project, ["config.materialized:table,+orders"]).unique_ids


def test_the_cache_is_beside_the_manifest_and_a_hit_runs_no_dbt(shop_project, monkeypatch):
    index = load_index(shop_project)
    first = _select(shop_project, ["stg_orders+1"])
    path = selection_path(shop_project, index.fingerprint, ["stg_orders+1"], None, None)
    assert path.parents[1] == index_dir(shop_project, index.fingerprint) and path.is_file()
    assert first.manifest == str(path.parents[1] / "manifest.json") and first.fingerprint == index.fingerprint

    def no_dbt(*args, **kwargs):
        raise AssertionError("a cache hit must not run dbt")

    monkeypatch.setattr(subprocess, "run", no_dbt)
    assert _select(shop_project, ["stg_orders+1"]).unique_ids == first.unique_ids
    assert cached_selection(index, ["stg_orders+1"], None, None).unique_ids == first.unique_ids
    assert cached_selection(index, ["stg_orders+2"], None, None) is None  # another selection: a miss


def test_parse_renders_only_what_dbt_selected(shop_project):
    index = load_index(shop_project)
    missing = plan_group(index, ["orders"], ["customers"], None)
    assert not missing.nodes and "dbt has not yet selected `orders`" in missing.note
    _select(shop_project, ["orders"], ["customers"])
    plan = plan_group(index, ["orders"], ["customers"], None)
    assert list(plan.nodes) == ["model.shop.orders"]


def test_int_order_payments_ephemeral_is_never_a_task(shop_project):
    _select(shop_project, ["+orders"])
    plan = plan_group(load_index(shop_project), ["+orders"], None, None)
    assert "model.shop.orders" in plan.nodes and "model.shop.int_order_payments" not in plan.nodes


@pytest.mark.slow
@pytest.mark.parametrize(
    ("select", "selector", "message"),
    [
        (["nope_model"], None, "dbt selector 'nope_model' matches no node"),
        (None, "nope", "Could not find selector named nope"),
        (["selector:nightly_shop"], None, "'selector' is not a valid method name"),
    ],
)
def test_a_bad_selection_names_the_manifest_dbt_checked(shop_project, select, selector, message):
    chosen = _select(shop_project, select, None, selector)
    problem = chosen.problem()
    assert problem is not None and message in problem
    assert f"manifest {chosen.manifest} (fingerprint {load_index(shop_project).fingerprint})" in problem


def test_a_stale_manifest_keeps_its_own_selections(shop_project, tmp_path):
    from airflow_retrain.dbt.__main__ import cache_manifest

    project = tmp_path / "shop"
    shutil.copytree(shop_project, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb"))
    cache_manifest(str(project), selections=[(["+customers"], None, None)])
    (project / "models" / "marts" / "brand_new.sql").write_text("select 1 as x\n")
    stale = load_index(project, allow_stale=True)
    assert stale.stale
    plan = plan_group(stale, ["+customers"], None, None)  # the old graph, from the old fingerprint's cache
    assert "model.shop.customers" in plan.nodes


def test_a_project_that_fails_to_parse_is_one_error_naming_the_file(shop_project, tmp_path):
    from airflow_retrain.dbt.__main__ import cache_manifest
    from airflow_retrain.hooks.dbt import DbtCommandError

    project = tmp_path / "shop"
    shutil.copytree(shop_project, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb"))
    (project / "models" / "marts" / "broken.sql").write_text("select * from {{ ref('orders' }}\n")
    with pytest.raises(DbtCommandError, match=r"broken\.sql") as e:
        cache_manifest(str(project))
    assert "the project does not compile" in str(e.value)
