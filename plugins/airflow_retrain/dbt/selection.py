"""dbt's node selection (``--select``/``--exclude``/``--selector``) evaluated over a cached manifest index.

A port of dbt-core 1.11's selection semantics (``dbt/graph/selector_spec.py``, ``selector_methods.py``,
``selector.py``; Apache-2.0) for the methods a project's build selection uses, so DAG parsing and spec
validation never import or run dbt. ``tests/unit/test_dbt_selection.py`` checks it against ``dbt ls`` on the
same projects. Methods that need run state (``state:``, ``result:``, ``source_status:``) are refused with the
selector named: they only make sense to dbt at build time.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

from airflow_retrain.dbt.manifest import ManifestIndex

RAW_SELECTOR_PATTERN = re.compile(
    r"\A"
    r"(?P<childrens_parents>(\@))?"
    r"(?P<parents>((?P<parents_depth>(\d*))\+))?"
    r"((?P<method>([\w.]+)):)?(?P<value>(.*?))"
    r"(?P<children>(\+(?P<children_depth>(\d*))))?"
    r"\Z"
)
#: resource types ``dbt build`` executes
EXECUTED = {"model", "seed", "snapshot", "test", "unit_test"}
_TESTS = {"test", "unit_test"}
_NEEDS_STATE = {"state", "result", "source_status"}
_KNOWN = {
    "fqn", "tag", "path", "file", "package", "config", "resource_type", "source", "test_type", "test_name",
    "exposure", "group", "access", "unit_test", "version", "wildcard",
}  # fmt: skip


class SelectionError(ValueError):
    """A selection dbt would reject, or that matches nothing; the message names the selector."""


def _criteria_from_string(text: str) -> list[str]:
    return text.split()


def _is_selected_node(fqn: list[str], node_selector: str) -> bool:
    """dbt's ``is_selected_node`` (unversioned models)."""
    if fqn and fqn[-1] == node_selector:
        return True
    flat_fqn = [item for segment in fqn for item in segment.split(".")]
    parts = node_selector.split(".")
    if len(flat_fqn) < len(parts):
        return False
    slurp_from_ix = None
    for i, part in enumerate(parts):
        if any(w in part for w in ("*", "?", "[", "]")):
            slurp_from_ix = i
            break
        if flat_fqn[i] != part:
            return False
    if slurp_from_ix is not None:
        if fnmatch(".".join(flat_fqn[slurp_from_ix:]), ".".join(parts[slurp_from_ix:])):
            return True
        if "." not in node_selector:
            return bool(fqn) and fnmatch(fqn[-1], node_selector)
        return False
    return True


class Selector:
    """Evaluate selections against one manifest index.

    :param index: the project's manifest index.
    """

    def __init__(self, index: ManifestIndex) -> None:
        self.index = index
        self.nodes = index.nodes
        self.root = Path(index.project_dir)

    # -- methods ------------------------------------------------------------------------------------
    def _search(self, method: str, args: list[str], value: str) -> set[str]:
        nodes = self.nodes
        if method in ("fqn", "wildcard"):
            if value == "*":
                return {u for u, n in nodes.items() if n["resource_type"] != "source"}
            return {
                u
                for u, n in nodes.items()
                if n["resource_type"] != "source"
                and (_is_selected_node(n["fqn"], value) or _is_selected_node(n["fqn"][1:], value))
            }
        if method == "tag":
            return {u for u, n in nodes.items() if any(fnmatch(t, value) for t in n["tags"])}
        if method == "group":
            return {u for u, n in nodes.items() if n["config"].get("group") and fnmatch(n["config"]["group"], value)}
        if method == "access":
            return {u for u, n in nodes.items() if n["resource_type"] == "model" and n["config"].get("access") == value}
        if method == "package":
            if value == "this":
                value = self.index.project_name
            return {u for u, n in nodes.items() if fnmatch(n["package_name"] or "", value)}
        if method == "resource_type":
            return {u for u, n in nodes.items() if n["resource_type"] == value}
        if method == "test_type":
            wanted = {"data": {"generic", "singular"}}.get(value, {value})
            return {u for u, n in nodes.items() if n.get("test_type") in wanted}
        if method == "test_name":
            return {
                u
                for u, n in nodes.items()
                if n["resource_type"] == "test" and n.get("test_name") and fnmatch(n["test_name"], value)
            }
        if method == "unit_test":
            return {u for u, n in nodes.items() if n["resource_type"] == "unit_test" and _is_selected_node(n["fqn"], value)}
        if method == "file":
            return {
                u
                for u, n in nodes.items()
                if n.get("original_file_path")
                and (
                    fnmatch(PurePosixPath(n["original_file_path"]).name, value)
                    or fnmatch(PurePosixPath(n["original_file_path"]).stem, value)
                )
            }
        if method == "path":
            paths = {p.relative_to(self.root) for p in self.root.glob(value)} if value else set()
            selected = set()
            for u, n in nodes.items():
                ofp = Path(n.get("original_file_path") or "")
                patch = n.get("patch_path")
                if ofp in paths or any(parent in paths for parent in ofp.parents if str(parent) != "."):
                    selected.add(u)
                elif patch and Path(patch.split("://", 1)[-1]) in paths:
                    selected.add(u)
            return selected
        if method == "source":
            parts = value.split(".")
            if len(parts) == 1:
                package, source, table = "*", parts[0], "*"
            elif len(parts) == 2:
                package, (source, table) = "*", parts
            elif len(parts) == 3:
                package, source, table = parts
            else:
                raise SelectionError(f"invalid source selector {value!r}: use source, source.table or package.source.table")
            return {
                u
                for u, n in nodes.items()
                if n["resource_type"] == "source"
                and fnmatch(n["package_name"] or "", package)
                and fnmatch(n.get("source_name") or "", source)
                and fnmatch(n["name"], table)
            }
        if method == "exposure":
            parts = value.split(".")
            package, name = ("*", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
            return {
                u
                for u, n in nodes.items()
                if n["resource_type"] == "exposure" and fnmatch(n["package_name"] or "", package) and fnmatch(n["name"], name)
            }
        if method == "config":
            if not args:
                raise SelectionError(f"config selector needs a key, e.g. config.materialized:{value}")
            out = set()
            for u, n in nodes.items():
                current: Any = n["config"]
                for key in args:
                    current = current.get(key) if isinstance(current, dict) else None
                if isinstance(current, list):
                    if any(str(v).lower() == value.lower() for v in current):
                        out.add(u)
                elif current is not None and str(current).lower() == value.lower():
                    out.add(u)
            return out
        if method == "version":
            return set()
        raise SelectionError(f"unknown selector method {method!r}")

    # -- graph ----------------------------------------------------------------------------------------
    def _walk(self, start: Iterable[str], graph: dict[str, list[str]], depth: int | None) -> set[str]:
        seen: set[str] = set()
        queue = deque((u, 0) for u in start)
        while queue:
            uid, d = queue.popleft()
            if depth is not None and d >= depth:
                continue
            for nxt in graph.get(uid, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append((nxt, d + 1))
        return seen

    def criterion(self, raw: str) -> set[str]:
        """Nodes one criterion (``2+tag:x+``) selects directly, before test expansion."""
        m = RAW_SELECTOR_PATTERN.match(raw)
        if not m:
            raise SelectionError(f"invalid dbt selector {raw!r}")
        value = m.group("value")
        method_full = m.group("method")
        if method_full:
            method, *args = method_full.split(".")
        elif "/" in value or "\\" in value:
            method, args = "path", []
        elif value.lower().endswith((".sql", ".py", ".csv")):
            method, args = "file", []
        else:
            method, args = "fqn", []
        if method in _NEEDS_STATE:
            raise SelectionError(
                f"selector {raw!r} uses {method}:, which needs dbt's run state; it cannot be rendered ahead of a run"
            )
        if method not in _KNOWN:
            raise SelectionError(f"selector {raw!r}: unknown selector method {method!r}")
        if m.group("childrens_parents") and (m.group("parents") or m.group("children")):
            raise SelectionError(f"selector {raw!r}: '@' cannot be combined with '+'")
        selected = self._search(method, args, value)
        if m.group("childrens_parents"):
            children = selected | self._walk(selected, self.index.child_map, None)
            return children | self._walk(children, self.index.parent_map, None)
        out = set(selected)
        if m.group("parents"):
            depth = m.group("parents_depth")
            out |= self._walk(selected, self.index.parent_map, int(depth) if depth else None)
        if m.group("children"):
            depth = m.group("children_depth")
            out |= self._walk(selected, self.index.child_map, int(depth) if depth else None)
        return out

    def match(self, token: str) -> set[str]:
        """Nodes one space-free token (criteria joined by ``,`` = intersection) selects, with its tests."""
        return self._with_tests(self._token(token)) & self._executable_ids()

    def _token(self, token: str) -> set[str]:
        parts = token.split(",")
        result = self.criterion(parts[0])
        for part in parts[1:]:
            result &= self.criterion(part)
        return result

    def _union(self, specs: Iterable[str]) -> set[str]:
        result: set[str] = set()
        for spec in specs:
            for token in _criteria_from_string(spec):
                result |= self._token(token)
        return result

    def _with_tests(self, selected: set[str]) -> set[str]:
        """dbt's default ``eager`` indirect selection: tests of any selected node come along."""
        tests = {
            u
            for u, n in self.nodes.items()
            if n["resource_type"] in _TESTS and any(p in selected for p in n["depends_on"])
        }
        return selected | tests

    # -- YAML selectors -------------------------------------------------------------------------------
    def _definition(self, definition: Any) -> set[str]:
        if isinstance(definition, str):
            return self._with_tests(self._union([definition]))
        if not isinstance(definition, dict):
            raise SelectionError(f"unsupported YAML selector definition {definition!r}")
        if "union" in definition or "intersection" in definition:
            key = "union" if "union" in definition else "intersection"
            included: list[set[str]] = []
            excluded: set[str] = set()
            for item in definition[key]:
                if isinstance(item, dict) and "exclude" in item and len(item) == 1:
                    for ex in item["exclude"]:
                        excluded |= self._definition(ex)
                else:
                    included.append(self._definition(item))
            if key == "union":
                result = set().union(*included) if included else set()
            else:
                result = set.intersection(*included) if included else set()
            return result - excluded
        method = definition.get("method")
        if method == "selector":
            return self.yaml_selector(definition["value"])
        raw = ""
        if definition.get("childrens_parents"):
            raw += "@"
        if definition.get("parents"):
            raw += f"{definition.get('parents_depth') or ''}+"
        raw += f"{method}:{definition.get('value')}" if method else str(definition.get("value"))
        if definition.get("children"):
            raw += f"+{definition.get('children_depth') or ''}"
        result = self._with_tests(self.criterion(raw))
        if "exclude" in definition:
            for ex in definition["exclude"]:
                result -= self._definition(ex)
        return result

    def yaml_selector(self, name: str) -> set[str]:
        selectors = self.index.selectors
        if name not in selectors:
            known = ", ".join(sorted(selectors)) or "none defined (selectors.yml)"
            raise SelectionError(f"selector:{name}: no such YAML selector in project {self.index.project_name} (known: {known})")
        return self._definition(selectors[name]["definition"])

    # -- public ---------------------------------------------------------------------------------------
    def select(
        self, select: list[str] | None = None, exclude: list[str] | None = None, selector: str | None = None
    ) -> set[str]:
        """Unique ids ``dbt build`` would execute for ``--select``/``--exclude``/``--selector``.

        :raises SelectionError: an invalid selector, or a selection that matches no executable node; the
            message names the selector.
        """
        select = list(select or [])
        for item in select:
            if item.startswith("selector:"):
                if selector:
                    raise SelectionError(f"{item!r}: use either --selector or selector: in select, not both")
                selector = item.removeprefix("selector:")
        select = [s for s in select if not s.startswith("selector:")]
        if selector:
            chosen = self.yaml_selector(selector)
            if select:
                chosen |= self._with_tests(self._union(select))
        elif select:
            for spec in select:
                for token in _criteria_from_string(spec):
                    if not self._with_tests(self._token(token)) & self._executable_ids():
                        raise SelectionError(f"dbt selector {token!r} matches no node of project {self.index.project_name}")
            chosen = self._with_tests(self._union(select))
        else:
            chosen = self._with_tests(self._search("fqn", [], "*"))
        if exclude:
            chosen -= self._with_tests(self._union(exclude))
        result = chosen & self._executable_ids()
        if not result:
            what = f"selector:{selector}" if selector else " ".join(select) or "(everything)"
            raise SelectionError(f"dbt selection {what!r} matches no node of project {self.index.project_name} to build")
        return result

    def _executable_ids(self) -> set[str]:
        cached = getattr(self, "_executable", None)
        if cached is None:
            cached = {
                u
                for u, n in self.nodes.items()
                if n["resource_type"] in EXECUTED
                and not (n["resource_type"] == "model" and n["config"].get("materialized") == "ephemeral")
            }
            self._executable = cached
        return cached


def select_nodes(
    index: ManifestIndex, select: list[str] | None = None, exclude: list[str] | None = None, selector: str | None = None
) -> set[str]:
    """Shortcut for :meth:`Selector.select`."""
    return Selector(index).select(select, exclude, selector)
