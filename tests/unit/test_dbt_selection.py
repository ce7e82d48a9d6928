"""Our selection over the cached manifest against dbt's own ``dbt ls`` on the same project."""

from __future__ import annotations

import json

import pytest

from airflow_retrain.dbt.manifest import load_index
from airflow_retrain.dbt.selection import EXECUTED, SelectionError, Selector

CASES = [
    (["customers"], None),
    (["marts.customers"], None),  # dotted fqn: folder.model
    (["cust*"], None),  # wildcard
    (["models/marts"], None),  # a path
    (["raw_orders"], None),  # a seed
    (["shop"], None),  # the package name
    (["tag:mart"], ["events_daily"]),
    (["+customers"], None),
    (["@stg_orders"], None),
    (["stg_orders+1", "orders_snapshot"], None),
    (["source:ext+"], None),
    (["config.materialized:table,customers+"], None),  # intersection
    (["int_order_payments+"], None),  # through an ephemeral model
    (["file:orders.sql resource_type:seed"], None),  # union inside one argument
]


def dbt_ls(project, args: list[str]) -> set[str]:
    from dbt.cli.main import dbtRunner

    result = dbtRunner().invoke(
        ["ls", "--project-dir", str(project), "--profiles-dir", str(project), "--output", "json",
         "--output-keys", "unique_id", "--quiet", *args]
    )  # fmt: skip
    assert result.success, result.exception
    return {json.loads(line)["unique_id"] for line in result.result}


def executable(index, ids: set[str]) -> set[str]:
    nodes = index.nodes
    return {
        u
        for u in ids
        if nodes[u]["resource_type"] in EXECUTED
        and not (nodes[u]["resource_type"] == "model" and nodes[u]["config"].get("materialized") == "ephemeral")
    }


@pytest.mark.slow
def test_selection_matches_dbt_ls(shop_project):
    index = load_index(shop_project)
    selector = Selector(index)
    for select, exclude in CASES:
        args = ["--select", *select] + (["--exclude", *exclude] if exclude else [])
        expected = executable(index, dbt_ls(shop_project, args))
        assert selector.select(select, exclude) == expected, (select, exclude)
    expected = executable(index, dbt_ls(shop_project, ["--selector", "nightly_shop"]))
    assert selector.select(None, None, "nightly_shop") == expected
    assert selector.select(["selector:nightly_shop"]) == expected


@pytest.mark.slow
@pytest.mark.parametrize(
    ("select", "selector", "message"),
    [
        (["nope_model"], None, "dbt selector 'nope_model' matches no node"),
        (["state:modified+"], None, "needs dbt's run state"),
        (["selector:nightly_churn"], None, "selector:nightly_churn: no such YAML selector"),
        (None, "nope", "selector:nope: no such YAML selector in project shop (known: nightly_shop)"),
        (["source:a.b.c.d"], None, "invalid source selector"),
    ],
)
def test_bad_selections_name_the_selector(shop_project, select, selector, message):
    with pytest.raises(SelectionError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        Selector(load_index(shop_project)).select(select, None, selector)
