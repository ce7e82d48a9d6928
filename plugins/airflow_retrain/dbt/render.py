"""Render a dbt selection into Airflow tasks from the cached manifest index, in milliseconds.

``dbt_build`` (the producer) runs the whole selection in one ``dbt build``; the ``dbt`` task group holds one
:class:`~airflow_retrain.operators.dbt.DbtNodeOperator` per selected model, seed and snapshot, with the
node's tests attached, which completes from the producer's per-node results. Above ``max_node_tasks``
nodes it holds one task per model folder instead: Airflow's triggerer loads the whole serialized DAG for
each trigger-started task, so a thousand node tasks cost it O(tasks x DAG size) -- minutes at 1,000 models
(see docs/dbt.md for the measurements). Rendering reads only
``index.json`` (see :mod:`.manifest`) and never runs dbt: with no manifest cached yet, only ``dbt_build`` is
rendered (it caches the manifest on its first run) and the DAG's docs say so.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from airflow_retrain.dbt.manifest import BUILDABLE, ManifestError, ManifestIndex, load_index
from airflow_retrain.dbt.selection import cached_selection

log = logging.getLogger(__name__)

_TASK_ID_RE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class DbtGroupPlan:
    """What the group will show: node ``unique_id`` -> attached test ids; and why it may be incomplete."""

    nodes: dict[str, list[str]] = field(default_factory=dict)
    index: ManifestIndex | None = None
    note: str = ""
    marts: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    #: node tasks start beside the producer (they need the producer's upstreams), else after it
    stream: bool = True
    #: one task per model folder (more nodes than ``max_node_tasks``), else one per node
    by_folder: bool = False


def plan_group(
    index: ManifestIndex, select: list[str] | None, exclude: list[str] | None, selector: str | None = None
) -> DbtGroupPlan:
    """Selected buildable nodes with their tests attached (a test joins each selected node it depends on;
    tests on sources only join a node per source).

    The selection is dbt's own, cached beside the manifest (:mod:`.selection`); before ``dbt_build`` or
    ``make dbt-manifest`` computed it, the plan has no nodes and its note says why.
    """
    nodes = index.nodes
    plan = DbtGroupPlan(index=index)
    selection = cached_selection(index, select, exclude, selector)
    if selection is None:
        plan.note = (
            f"dbt has not yet selected `{' '.join(select or [])}`{f' (selector {selector})' if selector else ''} "
            f"on the manifest of {index.project_dir} (fingerprint {index.fingerprint}); dbt_build does on its "
            "first run, and the next parse shows the nodes."
        )
        return plan
    if problem := selection.problem():
        plan.note = problem
        return plan
    # what dbt build executes: ephemeral models are compiled into their children, never run
    selected = {
        u for u in selection.unique_ids
        if u in nodes and not (nodes[u]["resource_type"] == "model" and nodes[u]["config"].get("materialized") == "ephemeral")
    }  # fmt: skip
    for uid in sorted(selected):
        if nodes[uid]["resource_type"] in BUILDABLE:
            plan.nodes[uid] = []
    orphans: list[str] = []
    for uid in sorted(selected):
        if nodes[uid]["resource_type"] not in ("test", "unit_test"):
            continue
        parents = [p for p in nodes[uid]["depends_on"] if p in plan.nodes]
        if parents:
            for p in parents:
                plan.nodes[p].append(uid)
            continue
        sources = [p for p in nodes[uid]["depends_on"] if nodes.get(p, {}).get("resource_type") == "source"]
        if sources:
            for s in sources:
                plan.nodes.setdefault(s, []).append(uid)
        else:
            orphans.append(uid)
    if orphans:
        plan.nodes["__other_tests__"] = orphans
    upstream_sources = set()
    for uid in selected:
        for p in nodes[uid]["depends_on"]:
            if nodes.get(p, {}).get("resource_type") == "source" and nodes[p].get("freshness"):
                upstream_sources.add(p)
    plan.sources = sorted(upstream_sources)
    plan.marts = marts_of(index, [u for u in plan.nodes if nodes.get(u, {}).get("resource_type") == "model"])
    return plan


def marts_of(index: ManifestIndex, model_ids: list[str]) -> list[str]:
    """The models that are marts: under a ``marts`` folder, else every table/incremental model."""
    nodes = index.nodes
    in_marts = [u for u in model_ids if "marts" in nodes[u]["fqn"][1:-1]]
    if in_marts:
        return sorted(in_marts)
    return sorted(u for u in model_ids if nodes[u]["config"].get("materialized") in ("table", "incremental"))


def asset_uri(project_name: str, model_name: str) -> str:
    """The Airflow Asset a built dbt model emits (``x-``: a custom scheme, no provider lookup at parse time)."""
    return f"x-dbt://{project_name}/{model_name}"


def _task_id(uid: str, index: ManifestIndex, taken: set[str]) -> str:
    if uid == "__other_tests__":
        return "other_tests"
    node = index.nodes[uid]
    if node["resource_type"] == "source":
        base = f"source_{node.get('source_name')}__{node['name']}"
    else:
        base = node["name"]
    if (
        node.get("package_name")
        and node["package_name"] != index.project_name
        and node["resource_type"] != "source"
    ):
        base = f"{node['package_name']}__{base}"
    task_id = _TASK_ID_RE.sub("_", base)[:200]
    if task_id in taken:
        task_id = f"{node['resource_type']}__{task_id}"
    taken.add(task_id)
    return task_id


#: above this many nodes the group shows one task per model folder (see the module docstring)
MAX_NODE_TASKS = 200


def folder_of(uid: str, index: ManifestIndex) -> str:
    """The folder a node's task belongs to above ``max_node_tasks``: its path in the project (``fqn``)."""
    node = index.nodes.get(uid)
    if node is None:
        return "other_tests"
    if node["resource_type"] == "source":
        return "sources"
    parts = [p for p in node["fqn"][1:-1]] or [node["resource_type"] + "s"]
    if node.get("package_name") and node["package_name"] != index.project_name:
        parts = [node["package_name"], *parts]
    return _TASK_ID_RE.sub("_", "__".join(parts))[:200]


def selection_of(uid: str, tests: list[str], index: ManifestIndex) -> list[str]:
    """``dbt build --select`` of just this node (its tests follow it: dbt's eager indirect selection)."""
    node = index.nodes.get(uid)
    if node is None:  # tests attached to no built node
        return [index.nodes[t]["name"] for t in tests if t in index.nodes]
    if node["resource_type"] == "source":
        return [f"source:{node.get('source_name')}.{node['name']}"]
    if node.get("package_name") and node["package_name"] != index.project_name:
        return [f"{node['package_name']}.{node['name']}"]
    return [node["name"]]


def docs_base_url() -> str:
    """Where ``make dbt-docs`` serves the docs (``RETRAIN_DBT_DOCS_URL``)."""
    return os.environ.get("RETRAIN_DBT_DOCS_URL", "http://localhost:8081").rstrip("/")


def build_dbt_stage(
    *,
    project_dir: str,
    select: list[str] | None,
    exclude: list[str] | None = None,
    selector: str | None = None,
    target: str | None = None,
    warehouse_conn_id: str | None = "retrain_warehouse",
    profiles_dir: str | None = None,
    pipeline: str,
    dbt_timeout: timedelta = timedelta(hours=2),
    group_id: str = "dbt",
    producer_task_id: str = "dbt_build",
    stream: bool | None = None,
    max_node_tasks: int = MAX_NODE_TASKS,
    **producer_kwargs: Any,
):
    """Create ``dbt_build`` and the ``dbt`` task group in the current DAG.

    :param stream: node tasks start in the triggerer beside ``dbt_build`` and finish as dbt finishes their
        node (default; needs a triggerer). ``False`` (``RETRAIN_DBT_STREAM_NODES=0``): they run after
        ``dbt_build`` on a worker and report its results, which ``dag.test()``/``airflow dags test`` need,
        since they run no triggerer. (With the default, those run on a worker too: a node task that runs
        before ``dbt_build`` reschedules itself rather than waiting in line.)
    :param max_node_tasks: above this many nodes, one task per model folder instead of one per node.
    :return: ``(producer, group or None, plan)``; streaming node tasks complete from the producer's
        results, so only the producer needs upstream dependencies.
    """
    if stream is None:
        stream = os.environ.get("RETRAIN_DBT_STREAM_NODES", "1") not in ("0", "false", "False")
    from airflow.sdk import Asset, TaskGroup

    from airflow_retrain.operators.dbt import DbtBuildOperator, DbtNodeOperator

    try:
        index = load_index(project_dir, allow_stale=True)
    except ManifestError as e:
        index = None
        plan = DbtGroupPlan(note=f"{e}. Rendered as one dbt_build task until then.")
    if index is not None:
        plan = plan_group(index, select, exclude, selector)
        if index.stale:
            plan.note = (
                f"The dbt graph is stale: rendered from a stale manifest of {project_dir}, cached for older files "
                f"(fingerprint {index.fingerprint}); dbt_build builds the current files and refreshes the cache "
                "for the next parse." + (f" {plan.note}" if plan.note else "")
            )
    outlets = (
        [Asset(asset_uri(index.project_name, index.nodes[u]["name"])) for u in plan.marts] if index else []
    )
    doc = f"`dbt build` of `{' '.join(select or [])}`" + (
        f" excluding `{' '.join(exclude)}`" if exclude else ""
    )
    producer = DbtBuildOperator(
        task_id=producer_task_id,
        project_dir=project_dir,
        select=select,
        exclude=exclude,
        selector=selector,
        target=target,
        warehouse_conn_id=warehouse_conn_id,
        profiles_dir=profiles_dir,
        pipeline=pipeline,
        dbt_timeout=dbt_timeout.total_seconds(),
        execution_timeout=dbt_timeout + timedelta(minutes=5),
        outlets=outlets,
        doc_md=doc + (f"\n\n**Note:** {plan.note}" if plan.note else ""),
        **producer_kwargs,
    )
    if index is None or not plan.nodes:
        if plan.note:
            log.warning("%s", plan.note)
        return producer, None, plan
    docs = docs_base_url()
    node_timeout = dbt_timeout + timedelta(minutes=10)
    common = {
        "artifact_root": producer_kwargs.get("artifact_root"),
        "artifact_conn_id": producer_kwargs.get("artifact_conn_id"),
        "timeout": node_timeout,
        "stream": stream,
        "retries": 0,
        "producer_task_id": producer_task_id,
        "build_kwargs": {
            "pipeline": pipeline, "project_dir": project_dir, "target": target,
            "warehouse_conn_id": warehouse_conn_id, "profiles_dir": profiles_dir,
        },
    }  # fmt: skip
    by_folder = len(plan.nodes) > max_node_tasks
    tooltip = plan.note or f"{len(plan.nodes)} dbt nodes, built by {producer_task_id}"
    with TaskGroup(group_id, tooltip=tooltip) as group:
        if by_folder:
            folders: dict[str, dict[str, list[str]]] = {}
            for uid, tests in plan.nodes.items():
                folder = folder_of(uid, index)
                if uid == "__other_tests__":  # tests attached to no built node: the first one stands for them
                    uid, tests = tests[0], tests[1:]
                folders.setdefault(folder, {})[uid] = tests
            for folder, members in sorted(folders.items()):
                first = next(iter(members))
                DbtNodeOperator(
                    task_id=folder,
                    unique_id=first,
                    test_ids=members[first],
                    nodes=members,
                    rebuild_select=sorted(
                        {s for uid, tests in members.items() for s in selection_of(uid, tests, index)}
                    ),
                    doc_md=f"{len(members)} dbt nodes of `{folder.replace('__', '/')}` with their tests; built by "
                    f"`{producer_task_id}`; each node's result is in this task's log and XCom.",
                    **common,
                )
        else:
            taken: set[str] = set()
            for uid, tests in plan.nodes.items():
                node = index.nodes.get(uid, {"resource_type": "test", "name": "other tests"})
                rtype = node["resource_type"]
                docs_url = (
                    f"{docs}/#!/{rtype}/{uid}" if rtype in ("model", "seed", "snapshot", "source") else None
                )
                DbtNodeOperator(
                    task_id=_task_id(uid, index, taken),
                    unique_id=uid if uid != "__other_tests__" else tests[0],
                    test_ids=tests if uid != "__other_tests__" else tests[1:],
                    rebuild_select=selection_of(uid, tests, index),
                    docs_url=docs_url,
                    doc_md=f"dbt {rtype} `{uid}` with {len(tests)} test(s); built by `{producer_task_id}`."
                    + (f" [dbt docs]({docs_url})" if docs_url else ""),
                    **common,
                )
    plan.stream = stream
    plan.by_folder = by_folder
    if not stream:
        producer >> group
    return producer, group, plan
