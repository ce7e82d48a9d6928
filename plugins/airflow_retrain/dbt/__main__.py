"""``python -m airflow_retrain.dbt``: cache a project's manifest (``dbt deps`` + ``dbt parse``), outside DAG parsing.

    python -m airflow_retrain.dbt manifest --project-dir dbt          # what `make dbt-manifest` runs
    python -m airflow_retrain.dbt select --project-dir dbt -s +churn_features   # dbt ls on the cached manifest
    python -m airflow_retrain.dbt render --project-dir dbt -s +churn_features   # what a DAG would show
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from airflow_retrain.config import project_root_for, retrain_home


def spec_selections(project_dir: str | Path, specs_dir: str | Path | None = None) -> list[tuple]:
    """``(select, exclude, selector)`` of every spec (raw YAML, unchecked) whose dbt project is ``project_dir``."""
    import yaml

    specs_dir = specs_dir or os.environ.get("RETRAIN_SPECS_DIR")  # the DAG files' specs folder
    folder = Path(specs_dir) if specs_dir else (retrain_home() or Path.cwd()) / "include" / "pipelines"
    project = Path(project_dir).resolve()
    found = []
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".yaml", ".yml") and not p.name.startswith("."))
    for path in files:
        try:
            dbt = (yaml.safe_load(path.read_text()) or {}).get("dbt") or {}
        except (yaml.YAMLError, OSError, AttributeError):
            continue  # a broken spec is reported by the loader, not here
        if isinstance(dbt, dict) and (project_root_for(path) / dbt.get("project_dir", "dbt")).resolve() == project:
            entry = (dbt.get("select") or None, dbt.get("exclude") or None, dbt.get("selector"))
            if entry not in found:
                found.append(entry)
    return found


def cache_manifest(
    project_dir: str,
    profiles_dir: str | None = None,
    target: str | None = None,
    selections: list[tuple] | None = None,
) -> str:
    """Run ``dbt deps`` (if packages are declared and missing) and ``dbt parse``; cache the manifest and
    dbt's selection on it for each ``(select, exclude, selector)`` (default: the specs that use the project).

    :return: a one-line description of what was cached.
    :raises DbtCommandError: the project does not parse (dbt's message names the file).
    """
    from airflow_retrain.dbt.manifest import partial_parse_file, project_fingerprint, store_manifest
    from airflow_retrain.dbt.selection import cache_selection
    from airflow_retrain.hooks.dbt import DbtHook

    project = Path(project_dir).resolve()
    hook = DbtHook(project, profiles_dir=profiles_dir, partial_parse_file=partial_parse_file(project, target or "default"))
    with tempfile.TemporaryDirectory(prefix="dbt-parse-") as tmp:
        if ((project / "packages.yml").is_file() or (project / "dependencies.yml").is_file()) and not (
            project / "dbt_packages"
        ).is_dir():
            hook.run("deps", target_path=tmp)
        fingerprint = project_fingerprint(project)  # after deps: installed packages are part of the project
        hook.run("parse", target=target, target_path=tmp)
        index = store_manifest(project, Path(tmp) / "manifest.json", fingerprint)
    lines = [f"cached manifest of {project} ({index.project_name}, {len(index.nodes)} nodes, fingerprint {fingerprint})"]
    for select, exclude, selector in spec_selections(project) if selections is None else selections:
        chosen = cache_selection(
            project, fingerprint, select, exclude, selector, profiles_dir=hook.profiles_dir, target=target,
            env=hook.child_env(),
        )  # fmt: skip
        what = " ".join(select or []) + (f" --selector {selector}" if selector else "")
        lines.append(f"  selection {what!r}: {chosen.problem() or f'{len(chosen.unique_ids)} nodes'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_retrain.dbt")
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("manifest", help="dbt deps + dbt parse, cached by a hash of the project's files")
    m.add_argument("--project-dir", default="dbt")
    m.add_argument("--profiles-dir")
    m.add_argument("--target")
    sel = sub.add_parser("select", help="dbt ls on the cached manifest, cached per fingerprint and selection")
    sel.add_argument("--project-dir", default="dbt")
    sel.add_argument("--profiles-dir")
    sel.add_argument("--target")
    sel.add_argument("-s", "--select", nargs="*")
    sel.add_argument("--exclude", nargs="*")
    sel.add_argument("--selector")
    r = sub.add_parser("render", help="print the nodes a selection renders to, from the cached manifest")
    r.add_argument("--project-dir", default="dbt")
    r.add_argument("-s", "--select", nargs="*")
    r.add_argument("--exclude", nargs="*")
    r.add_argument("--selector")
    args = parser.parse_args(argv)
    if args.cmd == "manifest":
        print(cache_manifest(args.project_dir, args.profiles_dir, args.target))
        return 0
    from airflow_retrain.dbt.manifest import load_index
    from airflow_retrain.dbt.render import plan_group

    if args.cmd == "select":
        from airflow_retrain.dbt.selection import cache_selection

        index = load_index(args.project_dir)
        start = time.perf_counter()
        chosen = cache_selection(
            args.project_dir, index.fingerprint, args.select, args.exclude, args.selector,
            profiles_dir=args.profiles_dir, target=args.target,
        )  # fmt: skip
        for uid in chosen.unique_ids:
            print(uid)
        print(f"{len(chosen.unique_ids)} nodes in {time.perf_counter() - start:.3f} s ({chosen.where()})")
        if chosen.problem():
            print(chosen.problem(), file=sys.stderr)
            return 1
        return 0

    start = time.perf_counter()
    plan = plan_group(load_index(args.project_dir), args.select, args.exclude, args.selector)
    for uid, tests in plan.nodes.items():
        print(f"{uid}  ({len(tests)} tests)")
    print(f"{len(plan.nodes)} nodes in {time.perf_counter() - start:.3f} s; marts: {', '.join(plan.marts) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
