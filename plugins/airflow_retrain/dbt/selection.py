"""dbt's own node selection, cached beside the manifest it was computed on.

Selection is dbt's: ``dbt ls`` with the same ``--select``/``--exclude``/``--selector`` ``dbt build`` gets,
run through ``dbtRunner(manifest=...)`` on the cached ``manifest.json`` (:mod:`.dbt_ls`, a script in dbt's
Python), so every selection ``dbt build`` accepts works, YAML selectors included, with no port of dbt's
semantics to drift from. Like Cosmos's ``DBT_LS_CACHE``, the result is cached per project fingerprint and
selection: ``<manifest cache>/<fingerprint>/selections/<key>.json``.

DAG parsing never runs dbt: it reads the cache (:func:`cached_selection`), and a miss renders
``dbt_build`` alone. The task that has the manifest (``dbt_build``, or ``make dbt-manifest``) fills it
(:func:`cache_selection`). The cache is derived from the manifest alone, so a worker without it simply
recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from airflow_retrain.dbt.manifest import ManifestIndex, cache_dir


class SelectionError(ValueError):
    """A selection dbt rejects, or one that matches nothing in a fresh manifest; names the manifest."""


@dataclass
class Selection:
    """What ``dbt ls`` returned for one selection on one manifest.

    :param unique_ids: the nodes dbt selected (tests by dbt's indirect selection, sources included).
    :param unmatched: the criteria dbt warned match no node.
    :param error: dbt's error when it rejected the selection (unknown YAML selector, bad syntax).
    :param manifest: the ``manifest.json`` dbt selected on; ``fingerprint`` the project files it was parsed from.
    """

    unique_ids: list[str]
    fingerprint: str
    manifest: str
    unmatched: list[str] = field(default_factory=list)
    error: str | None = None
    elapsed_s: float = 0.0

    def where(self) -> str:
        return f"manifest {self.manifest} (fingerprint {self.fingerprint})"

    def problem(self) -> str | None:
        """Why this selection cannot be built, naming the criterion and the manifest; ``None`` when it can."""
        if self.error:
            return f"dbt rejects the selection: {self.error} (checked on {self.where()})"
        if self.unmatched:
            names = ", ".join(repr(u) for u in self.unmatched)
            return f"dbt selector {names} matches no node (checked by dbt ls on {self.where()})"
        if not self.unique_ids:
            return f"the dbt selection matches no node (checked by dbt ls on {self.where()})"
        return None


def selection_args(select: list[str] | None, exclude: list[str] | None, selector: str | None) -> list[str]:
    """The selection arguments, exactly as ``dbt build`` gets them."""
    args: list[str] = []
    if select:
        args += ["--select", *select]
    if exclude:
        args += ["--exclude", *exclude]
    if selector:
        args += ["--selector", selector]
    return args


def selection_path(
    project_dir: str | os.PathLike, fingerprint: str, select: list[str] | None, exclude: list[str] | None,
    selector: str | None,
) -> Path:  # fmt: skip
    key = hashlib.sha256(json.dumps(selection_args(select, exclude, selector)).encode()).hexdigest()[:16]
    return cache_dir(project_dir, fingerprint) / "selections" / f"{key}.json"


def cached_selection(
    index: ManifestIndex, select: list[str] | None, exclude: list[str] | None, selector: str | None = None
) -> Selection | None:
    """The cached selection on ``index``'s manifest, or ``None`` (reads one small JSON file; runs no dbt)."""
    path = selection_path(index.project_dir, index.fingerprint, select, exclude, selector)
    try:
        return Selection(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _python_for_dbt() -> str:
    """dbt's Python: the one beside ``RETRAIN_DBT_EXECUTABLE`` when dbt lives in its own environment."""
    if exe := os.environ.get("RETRAIN_DBT_EXECUTABLE"):
        beside = Path(exe).with_name("python")
        if beside.exists():
            return str(beside)
    return sys.executable


def run_dbt_ls(
    project_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    fingerprint: str,
    select: list[str] | None,
    exclude: list[str] | None,
    selector: str | None,
    *,
    profiles_dir: str | os.PathLike | None = None,
    target: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> Selection:
    """Run ``dbt ls`` on a preloaded manifest in a subprocess (dbt's logging and globals stay out of Airflow).

    :param env: the dbt process's environment (the profile's variables); default a minimal one.
    """
    script = Path(__file__).with_name("dbt_ls.py")
    project_dir = Path(project_dir).resolve()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dbt-ls-") as tmp:
        out = Path(tmp) / "selection.json"
        argv = [_python_for_dbt(), str(script), "--manifest", str(manifest), "--out", str(out), "--",
                "--project-dir", str(project_dir), "--profiles-dir", str(profiles_dir or project_dir),
                "--target-path", str(Path(tmp) / "target"), "--log-path", str(Path(tmp) / "logs")]  # fmt: skip
        if target:
            argv += ["--target", target]
        argv += selection_args(select, exclude, selector)
        if env is None:
            from airflow_retrain.dbt.profiles import child_env

            env = child_env()
        proc = subprocess.run(argv, cwd=project_dir, env=env, capture_output=True, text=True, timeout=timeout)
        if not out.is_file():
            tail = " ".join((proc.stderr or proc.stdout or "").split()[-60:])
            raise SelectionError(f"dbt ls on {manifest} exited with code {proc.returncode} and no result: {tail}")
        data = json.loads(out.read_text())
    return Selection(
        unique_ids=data["unique_ids"],
        unmatched=data["unmatched"],
        error=data["error"],
        fingerprint=fingerprint,
        manifest=str(manifest),
        elapsed_s=round(time.perf_counter() - start, 3),
    )


def cache_selection(
    project_dir: str | os.PathLike,
    fingerprint: str,
    select: list[str] | None,
    exclude: list[str] | None,
    selector: str | None,
    **run_kwargs,
) -> Selection:
    """The selection on the cached manifest of ``fingerprint``: from the cache, else ``dbt ls`` (then cached).

    :param run_kwargs: ``profiles_dir``, ``target``, ``env`` for :func:`run_dbt_ls`.
    """
    path = selection_path(project_dir, fingerprint, select, exclude, selector)
    if path.is_file():
        try:
            cached = Selection(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            cached = None  # a torn or older file: recompute
        # an error may be the environment's (a profile variable), not the selection's: try again
        if cached is not None and not cached.error:
            return cached
    manifest = cache_dir(project_dir, fingerprint) / "manifest.json"
    result = run_dbt_ls(project_dir, manifest, fingerprint, select, exclude, selector, **run_kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(result)))
    os.replace(tmp, path)
    return result


def refresh_after_build(
    project_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    fingerprint: str,
    select: list[str] | None,
    exclude: list[str] | None,
    selector: str | None,
    **run_kwargs,
) -> Selection | None:
    """After a ``dbt build`` (passed or not): cache the manifest it wrote and dbt's selection on it.

    The manifest is cached only when the project's files are still those it was parsed from
    (``fingerprint``, taken before the build). The next DAG parse then renders the current graph.

    :return: the selection, or ``None`` when no manifest of these files is cached.
    """
    from airflow_retrain.dbt.manifest import project_fingerprint, store_manifest

    manifest = Path(manifest)
    cached = cache_dir(project_dir, fingerprint) / "index.json"
    if manifest.is_file() and not cached.is_file() and project_fingerprint(project_dir) == fingerprint:
        store_manifest(project_dir, manifest, fingerprint)
    if not cached.is_file():
        return None
    return cache_selection(project_dir, fingerprint, select, exclude, selector, **run_kwargs)
