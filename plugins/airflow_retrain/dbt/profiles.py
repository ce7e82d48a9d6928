"""Which dbt profile and target a run really uses, profiles generated from Airflow connections, and the
allow-listed environment of the dbt process.

dbt reads its secrets through ``env_var()``; the dbt process gets only the variables its profile needs
(set from the Airflow connection by :class:`~airflow_retrain.hooks.warehouse.WarehouseHook` or here), the
operating-system basics and the names a DAG author passes explicitly. Nothing of the worker's environment
(``AIRFLOW_CONN_*``, ``MLFLOW_TRACKING_PASSWORD``, cloud keys) reaches ``env_var()`` in analyst code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: what any process needs to run (no credentials)
BASE_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SHELL",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "VIRTUAL_ENV",
)  # fmt: skip
#: dbt's own non-secret switches, passed through when set
DBT_SETTINGS = (
    "DBT_LOG_LEVEL", "DBT_PRINTER_WIDTH", "DBT_PARTIAL_PARSE", "DBT_STATIC_PARSER", "DBT_USE_EXPERIMENTAL_PARSER",
    "DBT_TARGET_PATH", "DBT_CACHE_SELECTED_ONLY",
)  # fmt: skip
#: the environment variable the generated Postgres profile reads the password from (dbt scrubs
#: ``DBT_ENV_SECRET_*`` values from its logs)
PASSWORD_ENV = "DBT_ENV_SECRET_RETRAIN_PASSWORD"


class DbtProfileError(ValueError):
    """A profile or target that does not exist; the message names it and the file."""


def child_env(extra: dict[str, str] | None = None, passthrough: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """The dbt process's environment: an allow-list, never a copy of the worker's.

    :param extra: variables the profile reads (from the Airflow connection).
    :param passthrough: further names to copy from this process's environment (a DAG author's choice).
    """
    env = {k: os.environ[k] for k in (*BASE_ENV, *DBT_SETTINGS, *passthrough) if k in os.environ}
    env.update(extra or {})
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env["DO_NOT_TRACK"] = "1"
    return env


@dataclass(frozen=True)
class ResolvedTarget:
    profile: str
    target: str
    adapter: str
    location: str

    def describe(self) -> str:
        """Where dbt writes, without credentials (safe for logs and XCom)."""
        return f"{self.location} (profile {self.profile}, target {self.target})"


def _render(value: Any, env: dict[str, str]) -> Any:
    if not isinstance(value, str) or "{{" not in value:
        return value
    import jinja2

    def env_var(name: str, default: str | None = None) -> str:
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise DbtProfileError(f"env var {name!r} required by the dbt profile is not set")

    jenv = jinja2.Environment(undefined=jinja2.StrictUndefined)
    jenv.filters["as_number"] = lambda v: v
    jenv.filters["as_text"] = lambda v: v
    jenv.filters["as_bool"] = lambda v: v
    return jenv.from_string(value).render(env_var=env_var, var=lambda n, d=None: d)


def project_profile_name(project_dir: str | os.PathLike) -> str:
    path = Path(project_dir) / "dbt_project.yml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise DbtProfileError(f"cannot read {path}: {e.strerror}") from None
    if not data.get("profile"):
        raise DbtProfileError(f"{path}: no `profile:` set")
    return str(data["profile"])


def resolve_target(
    project_dir: str | os.PathLike, profiles_dir: str | os.PathLike, target: str | None, env: dict[str, str]
) -> ResolvedTarget:
    """The profile and target dbt will use, rendered the way dbt renders it (``env_var`` from ``env``).

    :raises DbtProfileError: no profiles.yml, no such profile, or no such target (all named).
    """
    profile = project_profile_name(project_dir)
    path = Path(profiles_dir) / "profiles.yml"
    try:
        profiles = yaml.safe_load(path.read_text()) or {}
    except OSError:
        raise DbtProfileError(f"no profiles.yml in {profiles_dir} (profile {profile!r} of {project_dir})") from None
    if profile not in profiles:
        known = ", ".join(k for k in profiles if k != "config") or "none"
        raise DbtProfileError(f"profile {profile!r} (from {project_dir}/dbt_project.yml) is not in {path}; profiles: {known}")
    entry = profiles[profile] or {}
    outputs = entry.get("outputs") or {}
    name = target or _render(entry.get("target"), env) or "default"
    if name not in outputs:
        raise DbtProfileError(
            f"target {name!r} is not an output of profile {profile!r} in {path}; outputs: {', '.join(outputs) or 'none'}"
        )
    out = {k: _render(v, env) for k, v in (outputs[name] or {}).items() if k in ("type", "path", "host", "port", "dbname", "database", "schema")}
    adapter = str(out.get("type"))
    if adapter == "duckdb":
        db_path = str(out.get("path") or ":memory:")
        if db_path != ":memory:" and not Path(db_path).is_absolute():
            db_path = str((Path(project_dir) / db_path).resolve())
        location = f"duckdb:{db_path}"
    else:
        location = (
            f"{adapter}://{out.get('host')}:{out.get('port')}/{out.get('dbname') or out.get('database')}"
            f" (schema {out.get('schema')})"
        )
    return ResolvedTarget(profile=profile, target=name, adapter=adapter, location=location)


def profile_from_connection(profile_name: str, params: Any, target_name: str | None = None) -> tuple[str, dict[str, str]]:
    """A ``profiles.yml`` for a project without one, from :class:`WarehouseParams`; no secret in the file.

    :return: the YAML text and the environment it reads (the password, only for the dbt process).
    """
    target_name = target_name or params.kind
    env: dict[str, str] = {}
    if params.kind == "duckdb":
        output: dict[str, Any] = {"type": "duckdb", "path": params.duckdb_path, "threads": 4}
    elif params.kind == "postgres":
        output = {
            "type": "postgres",
            "host": params.host,
            "port": int(params.port or 5432),
            "user": params.user,
            "password": '{{ env_var("' + PASSWORD_ENV + '", "") }}',
            "dbname": params.dbname,
            "schema": params.schema,
            "threads": 4,
        }
        if params.password:
            env[PASSWORD_ENV] = params.password
    else:
        raise DbtProfileError(f"no dbt target for a {params.kind!r} connection")
    text = yaml.safe_dump({profile_name: {"target": target_name, "outputs": {target_name: output}}}, sort_keys=False)
    return text, env
