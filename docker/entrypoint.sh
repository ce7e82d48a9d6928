#!/usr/bin/env bash
# Entrypoint of the airflow-retrain image: a thin wrapper around the official /entrypoint.
#
# Airflow 3's default auth manager (SimpleAuthManager) reads user passwords from a JSON file
# ({"<user>": "<password>"}); when a configured user is missing from it, it invents a random password
# and only prints it to the api-server log. So that the UI login is the one from .env, this writes the
# file before Airflow starts, when both of these are set (docker-compose.yaml sets them on the
# api-server only):
#   AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE   where Airflow reads the file
#   _RETRAIN_ADMIN_PASSWORD                             the password
#   _RETRAIN_ADMIN_USERNAME                             the user (default: admin)
# The file must stay writable: SimpleAuthManager opens it in append mode to add users it lacks.
# Everything else (DB wait, `bash`/`python` pass-through, `airflow <cmd>`) is the official entrypoint's.
set -euo pipefail

if [[ -n "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-}" && -n "${_RETRAIN_ADMIN_PASSWORD:-}" ]]; then
    python - <<'PY'
import json
import os

path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
user = os.environ.get("_RETRAIN_ADMIN_USERNAME") or "admin"
os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
old_umask = os.umask(0o002)  # group-writable: containers run as "${AIRFLOW_UID}:0"
try:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({user: os.environ["_RETRAIN_ADMIN_PASSWORD"]}, fh)
        fh.write("\n")
finally:
    os.umask(old_umask)
print(f"simple auth manager: password for {user!r} written to {path}")
PY
fi
# Not needed by Airflow itself; keep it out of every child process's environment.
unset _RETRAIN_ADMIN_PASSWORD

exec /entrypoint "$@"
