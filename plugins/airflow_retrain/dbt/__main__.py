"""``python -m airflow_retrain.dbt``: cache a project's manifest (``dbt deps`` + ``dbt parse``), outside DAG parsing.

    python -m airflow_retrain.dbt manifest --project-dir dbt          # what `make dbt-manifest` runs
    python -m airflow_retrain.dbt render --project-dir dbt -s +churn_features   # what a DAG would show
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def cache_manifest(project_dir: str, profiles_dir: str | None = None, target: str | None = None) -> str:
    """Run ``dbt deps`` (if packages are declared and missing) and ``dbt parse``; cache the manifest.

    :return: a one-line description of what was cached.
    """
    from airflow_retrain.dbt.manifest import partial_parse_file, project_fingerprint, store_manifest
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
    return f"cached manifest of {project} ({index.project_name}, {len(index.nodes)} nodes, fingerprint {fingerprint})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_retrain.dbt")
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("manifest", help="dbt deps + dbt parse, cached by a hash of the project's files")
    m.add_argument("--project-dir", default="dbt")
    m.add_argument("--profiles-dir")
    m.add_argument("--target")
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

    start = time.perf_counter()
    plan = plan_group(load_index(args.project_dir), args.select, args.exclude, args.selector)
    for uid, tests in plan.nodes.items():
        print(f"{uid}  ({len(tests)} tests)")
    print(f"{len(plan.nodes)} nodes in {time.perf_counter() - start:.3f} s; marts: {', '.join(plan.marts) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
