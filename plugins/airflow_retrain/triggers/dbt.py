"""DbtNodeTrigger: completes one dbt node's task in the Airflow grid when ``dbt_build`` reports it finished.

The node tasks start in the triggerer (``start_from_trigger``): no worker slot and no process start per
model. Each trigger polls the small status files the ``dbt_build`` task writes as dbt finishes nodes
(:mod:`airflow_retrain.dbt.results`) and ends its task as success, failed or skipped.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
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
    read_done,
    read_node_status,
    status_file_name,
)

#: one directory listing per status folder and interval, shared by all node triggers of a run in this
#: triggerer (a thousand triggers cost one ``listdir`` per poll, not thousands of file reads)
_LISTINGS: dict[str, tuple[float, frozenset[str]]] = {}


def _listing(status_dir: str, max_age: float) -> frozenset[str]:
    now = time.monotonic()
    cached = _LISTINGS.get(status_dir)
    if cached and now - cached[0] < max_age:
        return cached[1]
    try:
        names = frozenset(os.listdir(status_dir))
    except OSError:
        names = frozenset()
    if len(_LISTINGS) > 256:  # forget runs nobody polls any more
        for key in [k for k, (t, _) in _LISTINGS.items() if now - t > 60]:
            del _LISTINGS[key]
    _LISTINGS[status_dir] = (now, names)
    return names


def node_outcome(
    unique_id: str, test_ids: list[str], status_dir: Path, *, final: bool = False
) -> dict[str, Any] | None:
    """The state of a node with its tests once all are finished (or dbt exited), else ``None``.

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

    :param unique_id: the model, seed or snapshot.
    :param test_ids: the tests attached to it in the Airflow group.
    :param status_dir: where ``dbt_build`` writes per-node status (templated: run-scoped).
    :param docs_url: link to the node in dbt docs (pushed as XCom for the "dbt docs" link).
    :param poll_interval: seconds between looks at the status files.
    """

    def __init__(
        self,
        unique_id: str,
        test_ids: list[str],
        status_dir: str,
        docs_url: str | None = None,
        poll_interval: float = 0.3,
    ) -> None:
        super().__init__()
        self.unique_id = unique_id
        self.test_ids = list(test_ids)
        self.status_dir = status_dir
        self.docs_url = docs_url
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_retrain.triggers.dbt.DbtNodeTrigger",
            {
                "unique_id": self.unique_id,
                "test_ids": self.test_ids,
                "status_dir": self.status_dir,
                "docs_url": self.docs_url,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self):
        status_dir = Path(self.status_dir)
        is_source = self.unique_id.startswith("source.")
        wanted = {status_file_name(u) for u in (self.test_ids if is_source else [self.unique_id, *self.test_ids])}
        while True:
            names = _listing(self.status_dir, self.poll_interval * 0.8)
            if DONE_MARKER in names or wanted <= names:
                outcome = node_outcome(self.unique_id, self.test_ids, status_dir, final=DONE_MARKER in names)
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
