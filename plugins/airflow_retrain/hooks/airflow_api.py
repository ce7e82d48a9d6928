"""AirflowApiHook: the few calls of Airflow's own REST API a task needs (the Task SDK cannot set a note).

Airflow 3's Task SDK gives a task no way to annotate its own DAG run; the public REST API does
(``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}?update_mask=note``). The connection (default
``retrain_airflow_api``, type ``http``) holds the API server's URL in ``host`` and a user's ``login`` and
``password``, exchanged for a JWT at ``POST /auth/token``; the password never reaches a log.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseHook

NOTE_LIMIT = 1000  # Airflow's note column


class AirflowApiHook(BaseHook):
    """:param airflow_api_conn_id: an ``http`` connection: ``host`` the API server's URL, ``login``/``password``."""

    conn_name_attr = "airflow_api_conn_id"
    default_conn_name = "retrain_airflow_api"
    conn_type = "http"
    hook_name = "Airflow REST API (airflow-retrain)"

    def __init__(self, airflow_api_conn_id: str = default_conn_name, timeout: float = 10.0) -> None:
        super().__init__()
        self.airflow_api_conn_id = airflow_api_conn_id
        self.timeout = timeout

    @cached_property
    def base_url(self) -> str:
        conn = self.get_connection(self.airflow_api_conn_id)
        host = conn.host or ""
        if "://" not in host:
            host = f"{conn.schema or 'http'}://{host}" + (f":{conn.port}" if conn.port else "")
        return host.rstrip("/")

    def _token(self, client) -> str:
        conn = self.get_connection(self.airflow_api_conn_id)
        response = client.post(f"{self.base_url}/auth/token", json={"username": conn.login, "password": conn.password})
        response.raise_for_status()
        return response.json()["access_token"]

    def set_dag_run_note(self, dag_id: str, run_id: str, note: str) -> dict[str, Any]:
        """Set the DAG run's note (shown in the run list and grid); returns the API's DAG run."""
        import httpx

        with httpx.Client(timeout=self.timeout) as client:
            token = self._token(client)
            response = client.patch(
                f"{self.base_url}/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}",
                params={"update_mask": "note"},
                json={"note": note[:NOTE_LIMIT]},
                headers={"Authorization": f"Bearer {token}"},
            )
            response.raise_for_status()
            return response.json()
