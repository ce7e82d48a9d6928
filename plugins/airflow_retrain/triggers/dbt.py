"""DbtNodeTrigger: completes one dbt node's task in the Airflow grid when ``dbt_build`` reports it finished.

The node tasks start in the triggerer (``start_from_trigger``): no worker slot and no process start per
model. The triggers of a run share one poller of the small status documents the ``dbt_build`` task writes
to the run's artifact store as dbt finishes nodes (:func:`airflow_retrain.dbt.results.run_status_prefix`;
``file://`` or ``s3://``, so ``dbt_build``'s worker and the triggerer share no disk); each ends its task
as success, failed or skipped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.triggers.base import (
    BaseTrigger,
    TaskFailedEvent,
    TaskSkippedEvent,
    TaskSuccessEvent,
    TriggerEvent,
)

from airflow_retrain.dbt.results import (
    DONE_MARKER,
    FAILED,
    SKIPPED,
    list_status_names,
    read_done,
    read_node_status,
    run_status_prefix,
    status_file_name,
)


class _StatusWatcher:
    """One poller per status prefix in this triggerer, shared by all node triggers of a run.

    Each poll is one listing of the prefix (in a thread: object stores block); a trigger is woken only when all its files (or ``_done.json``) exist, so
    a thousand waiting nodes cost the triggerer one listing per interval, not a thousand wake-ups.
    """

    _by_dir: dict[str, _StatusWatcher] = {}

    def __init__(self, status_prefix: Any, interval: float) -> None:
        self.status_prefix = status_prefix
        self.interval = interval
        self.waiters: list[tuple[frozenset[str], asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    @classmethod
    def for_prefix(cls, status_prefix: Any, interval: float) -> _StatusWatcher:
        key = str(status_prefix)
        watcher = cls._by_dir.get(key)
        if watcher is None:
            if len(cls._by_dir) > 256:  # forget runs nobody waits on any more
                for key in [k for k, w in cls._by_dir.items() if not w.waiters]:
                    del cls._by_dir[key]
            watcher = cls._by_dir[key] = cls(status_prefix, interval)
        return watcher

    async def wait_for(self, wanted: frozenset[str]) -> frozenset[str]:
        """Return the folder's listing once every name in ``wanted`` (or the done marker) is in it."""
        future = asyncio.get_running_loop().create_future()
        self.waiters.append((wanted, future))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._poll())
        return await future

    async def _poll(self) -> None:
        while True:
            names = await asyncio.to_thread(list_status_names, self.status_prefix)
            finished = DONE_MARKER in names
            waiting = []
            for wanted, future in self.waiters:
                if future.done():
                    continue
                if finished or wanted <= names:
                    future.set_result(names)
                else:
                    waiting.append((wanted, future))
            self.waiters = waiting
            if not waiting:
                return
            await asyncio.sleep(self.interval)


def node_outcome(unique_id: str, test_ids: list[str], status_dir: Any, *, final: bool = False) -> dict[str, Any] | None:
    """The state of a node with its tests once all are finished (or dbt exited), else ``None``.

    :param status_dir: the run's status prefix (:func:`~airflow_retrain.dbt.results.run_status_prefix`).

    :return: ``{"state": "success"|"failed"|"skipped", "message": ..., "results": [...]}``.
    """
    done = read_done(status_dir)
    results: list[dict[str, Any]] = []
    missing: list[str] = []
    is_source = unique_id.startswith("source.")  # sources are not built; their tests are
    for uid in test_ids if is_source else [unique_id, *test_ids]:
        status = read_node_status(status_dir, uid)
        if status is None:
            missing.append(uid)
        else:
            results.append(status)
    if missing and done is None and not final:
        return None
    primary = next((r for r in results if r["unique_id"] == unique_id), None)
    failed = [r for r in results if r["status"] in FAILED]
    lines = [
        f"{r['resource_type']} {r['name']}: {r['status']} in {r['execution_time']:.2f} s"
        + (f" ({r['failures']} failing rows)" if r.get("failures") else "")
        + (f": {r['message']}" if r["status"] in FAILED and r.get("message") else "")
        for r in results
    ]
    if failed:
        state = "failed"
        message = "; ".join(
            f"{r['resource_type']} {r['name']} {r['status']}: {r.get('message') or ''}".rstrip(": ") for r in failed
        )
    elif is_source:
        state = "success" if results else "skipped"
        message = f"{unique_id}: {len(results)} test(s) passed" if results else f"{unique_id}: tests not run"
    elif primary is None:
        reason = (done or {}).get("message") or "dbt_build did not run it"
        state = "failed" if (done or {}).get("state") == "failed" else "skipped"
        message = f"{unique_id} was not built: {reason}"
    elif primary["status"] in SKIPPED:
        state, message = "skipped", f"{unique_id} skipped by dbt (an upstream node failed)"
    else:
        state = "success"
        message = f"{unique_id} {primary['status']} in {primary['execution_time']:.2f} s"
        if missing:
            message += f"; {len(missing)} attached test(s) not run"
    return {"state": state, "message": message, "lines": lines, "results": results}


class DbtNodeTrigger(BaseTrigger):
    """Wait for one dbt node and its attached tests.

    The run's status prefix is derived here from the run (``status_*``, templated on the node task and
    rendered by the triggerer) and the artifact store, so ``dbt_build`` and the triggerer share no disk.

    :param unique_id: the model, seed or snapshot.
    :param test_ids: the tests attached to it in the Airflow group.
    :param status_dag_id: the DAG (templated).
    :param status_run_id: the DAG run (templated).
    :param status_clear_number: the run's clearing (templated): a cleared run reads fresh statuses.
    :param artifact_root: the artifact store's root URI; ``None``: the deployment's default.
    :param artifact_conn_id: its Airflow connection.
    :param docs_url: link to the node in dbt docs (pushed as XCom for the "dbt docs" link).
    :param poll_interval: seconds between listings of the status prefix.
    """

    def __init__(
        self,
        unique_id: str,
        test_ids: list[str],
        status_dag_id: str,
        status_run_id: str,
        status_clear_number: int | str = 0,
        artifact_root: str | None = None,
        artifact_conn_id: str | None = None,
        docs_url: str | None = None,
        poll_interval: float = 0.3,
    ) -> None:
        super().__init__()
        self.unique_id = unique_id
        self.test_ids = list(test_ids)
        self.status_dag_id = status_dag_id
        self.status_run_id = status_run_id
        self.status_clear_number = status_clear_number
        self.artifact_root = artifact_root
        self.artifact_conn_id = artifact_conn_id
        self.docs_url = docs_url
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_retrain.triggers.dbt.DbtNodeTrigger",
            {
                "unique_id": self.unique_id,
                "test_ids": self.test_ids,
                "status_dag_id": self.status_dag_id,
                "status_run_id": self.status_run_id,
                "status_clear_number": self.status_clear_number,
                "artifact_root": self.artifact_root,
                "artifact_conn_id": self.artifact_conn_id,
                "docs_url": self.docs_url,
                "poll_interval": self.poll_interval,
            },
        )

    def status_prefix(self) -> Any:
        return run_status_prefix(
            self.status_dag_id, self.status_run_id, self.status_clear_number, self.artifact_root, self.artifact_conn_id
        )

    async def run(self):
        status_prefix = await asyncio.to_thread(self.status_prefix)
        is_source = self.unique_id.startswith("source.")
        wanted = {status_file_name(u) for u in (self.test_ids if is_source else [self.unique_id, *self.test_ids])}
        watcher = _StatusWatcher.for_prefix(status_prefix, self.poll_interval)
        while True:
            names = await watcher.wait_for(frozenset(wanted))
            final = DONE_MARKER in names
            outcome = await asyncio.to_thread(node_outcome, self.unique_id, self.test_ids, status_prefix, final=final)
            if outcome is not None:
                break
            await asyncio.sleep(self.poll_interval)

        for line in outcome["lines"]:
            self.log.info("%s", line)
        xcoms: dict[str, Any] = {
            "return_value": {"state": outcome["state"], "message": outcome["message"], "results": outcome["results"]}
        }
        if self.docs_url:
            xcoms["dbt_docs_url"] = self.docs_url
        if outcome["state"] == "success":
            self.log.info("%s", outcome["message"])
            yield TaskSuccessEvent(xcoms=xcoms)
        elif outcome["state"] == "skipped":
            self.log.warning("%s", outcome["message"])
            yield TaskSkippedEvent(xcoms=xcoms)
        else:
            self.log.error("%s", outcome["message"])
            yield TaskFailedEvent(xcoms=xcoms)


__all__ = ["DbtNodeTrigger", "TriggerEvent", "node_outcome"]
