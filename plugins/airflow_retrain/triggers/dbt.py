"""DbtNodeTrigger: completes a dbt node's task (one model, or a folder of them) when ``dbt_build`` reports it.

The node tasks start in the triggerer (``start_from_trigger``): no worker slot and no process start per
task. The triggers of a run share one poller of the small status documents the ``dbt_build`` task writes
to the run's artifact store as dbt finishes nodes (:func:`airflow_retrain.dbt.results.run_status_root`;
``file://`` or ``s3://``, so ``dbt_build``'s worker and the triggerer share no disk) and one look-up of
``dbt_build``'s state per ``PRODUCER_STATE_INTERVAL``; each ends its task as success, failed or skipped.

No node waits without a bound: once ``dbt_build`` is in a final state (failed, upstream failed, skipped,
success) the node ends within one look-up, naming why; while it has not started, the trigger's timeout
(``dbt.timeout_minutes`` + 10 minutes) applies. :func:`decide` is the one place that reads these rules.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from airflow.triggers.base import (
    BaseTrigger,
    TaskFailedEvent,
    TaskSkippedEvent,
    TaskSuccessEvent,
    TriggerEvent,
)

from airflow_retrain.dbt.results import (
    CURRENT_MARKER,
    DONE_MARKER,
    FAILED,
    SKIPPED,
    list_status_names,
    read_current,
    read_done,
    read_node_status,
    run_status_root,
    status_file_name,
)

#: ``dbt_build`` states after which it writes no more statuses in this clearing of the run
PRODUCER_FINAL = frozenset({"success", "failed", "upstream_failed", "skipped", "removed"})
#: seconds between look-ups of ``dbt_build``'s state (one per run, shared by its node triggers)
PRODUCER_STATE_INTERVAL = 10.0
#: the producer's state could not be looked up (no Task SDK comms: a unit test, an old triggerer)
UNKNOWN = "unknown"


def lookup_producer_state(dag_id: str, run_id: str, task_id: str) -> str | None:
    """``dbt_build``'s state in this run through the Task SDK (``None``: not scheduled yet); ``UNKNOWN`` without
    Task SDK comms."""
    try:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, task_ids=[task_id], run_ids=[run_id])
    except Exception as e:  # no supervisor comms here: fall back to the done marker alone
        logging.getLogger(__name__).warning(
            "could not look up %s's state in %s/%s: %r", task_id, dag_id, run_id, e
        )
        return UNKNOWN
    state = (states.get(run_id) or {}).get(task_id)
    return str(state.value if hasattr(state, "value") else state) if state is not None else None


class _StatusWatcher:
    """One poller per run in this triggerer, shared by all node triggers of the run.

    Each poll reads ``_current.json``, lists the current try's folder (in a thread: object stores block)
    and, every ``PRODUCER_STATE_INTERVAL``, looks up ``dbt_build``'s state; a trigger is woken only when its
    files, the done marker or a final ``dbt_build`` state appear, so a thousand waiting nodes cost the
    triggerer one listing per interval, not a thousand wake-ups.
    """

    _by_key: dict[str, _StatusWatcher] = {}

    def __init__(self, status_root: Any, producer: tuple[str, str, str], interval: float) -> None:
        self.status_root = status_root
        self.producer = producer
        self.interval = interval
        self.waiters: list[tuple[frozenset[str], asyncio.Future]] = []
        self.task: asyncio.Task | None = None
        self.state: str | None = UNKNOWN
        self._state_at = float("-inf")

    @classmethod
    def for_run(cls, status_root: Any, producer: tuple[str, str, str], interval: float) -> _StatusWatcher:
        key = f"{status_root}|{'|'.join(producer)}"
        watcher = cls._by_key.get(key)
        if watcher is None:
            if len(cls._by_key) > 256:  # forget runs nobody waits on any more
                for old in [k for k, w in cls._by_key.items() if not w.waiters]:
                    del cls._by_key[old]
            watcher = cls._by_key[key] = cls(status_root, producer, interval)
        return watcher

    async def wait_for(self, wanted: frozenset[str]) -> str | None:
        """Return ``dbt_build``'s last known state once every name in ``wanted``, the done marker or a final
        ``dbt_build`` state is there."""
        future = asyncio.get_running_loop().create_future()
        self.waiters.append((wanted, future))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._poll())
        return await future

    def _snapshot(self) -> frozenset[str]:
        current = read_current(self.status_root)
        if current is None:
            return frozenset()
        return list_status_names(self.status_root / current["attempt"]) | {CURRENT_MARKER}

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                names = await asyncio.to_thread(self._snapshot)
                if loop.time() - self._state_at >= PRODUCER_STATE_INTERVAL:
                    self.state = await asyncio.to_thread(lookup_producer_state, *self.producer)
                    self._state_at = loop.time()
            except Exception as e:  # a failed poll must not strand every waiter of the run: try again
                logging.getLogger(__name__).warning("polling %s failed: %r", self.status_root, e)
                await asyncio.sleep(self.interval)
                continue
            wake = DONE_MARKER in names or self.state in PRODUCER_FINAL
            waiting = []
            for wanted, future in self.waiters:
                if future.done():
                    continue
                if wake or wanted <= names:
                    future.set_result(self.state)
                else:
                    waiting.append((wanted, future))
            self.waiters = waiting
            if not waiting:
                return
            await asyncio.sleep(self.interval)


def node_outcome(
    unique_id: str, test_ids: list[str], status_dir: Any, *, final: bool = False
) -> dict[str, Any] | None:
    """The state of a node with its tests once all are finished (or, ``final``, dbt exited), else ``None``.

    :param status_dir: the folder of one try of ``dbt_build`` (see :func:`decide`).

    :return: ``{"state": "success"|"failed"|"skipped", "message": ..., "results": [...]}``.
    """
    results: list[dict[str, Any]] = []
    missing: list[str] = []
    is_source = unique_id.startswith("source.")  # sources are not built; their tests are
    for uid in test_ids if is_source else [unique_id, *test_ids]:
        status = read_node_status(status_dir, uid)
        if status is None:
            missing.append(uid)
        else:
            results.append(status)
    if missing and not final:
        return None
    done = read_done(status_dir) if missing else None
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
            f"{r['resource_type']} {r['name']} {r['status']}: {r.get('message') or ''}".rstrip(": ")
            for r in failed
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


def nodes_outcome(
    nodes: dict[str, list[str]], status_dir: Any, *, final: bool = False
) -> dict[str, Any] | None:
    """:func:`node_outcome` of a set of nodes (one model, or a folder of them): failed if any failed, skipped if
    any was skipped, else success; ``None`` while any is unfinished (and not ``final``)."""
    outcomes = {}
    for uid, tests in nodes.items():
        outcome = node_outcome(uid, tests, status_dir, final=final)
        if outcome is None:
            return None
        outcomes[uid] = outcome
    if len(outcomes) == 1:
        return next(iter(outcomes.values()))
    by_state: dict[str, list[str]] = {}
    for uid, o in outcomes.items():
        by_state.setdefault(o["state"], []).append(uid)
    state = "failed" if "failed" in by_state else "skipped" if "skipped" in by_state else "success"
    if state == "success":
        message = f"{len(outcomes)} dbt nodes built with their tests"
    else:
        message = f"{len(by_state[state])} of {len(outcomes)} dbt nodes {state}: " + "; ".join(
            outcomes[u]["message"] for u in by_state[state]
        )
    return {
        "state": state,
        "message": message,
        "lines": [line for o in outcomes.values() for line in o["lines"]],
        "results": [r for o in outcomes.values() for r in o["results"]],
    }


def decide(
    nodes: dict[str, list[str]],
    status_root: Any,
    clear_number: int,
    producer_state: str | None,
    producer_task_id: str,
) -> dict[str, Any] | None:
    """What a node task does now: ``None`` (wait), or ``{"state": "success"|"failed"|"skipped"|"rebuild", ...}``.

    - ``dbt_build``'s current try belongs to this clearing of the run (or is still running): the node ends
      with its statuses from that try.
    - The node was cleared after ``dbt_build`` had finished (its try is from an earlier clearing and it is
      in a final state): ``rebuild`` -- the node task runs ``dbt build -s <node>`` itself.
    - ``dbt_build`` is in a final state without having reported the node (it failed before dbt ran, was
      killed, its upstream failed): failed, naming ``dbt_build``'s state.
    - ``dbt_build`` exited but may run again (up for retry, cleared): wait.

    :param clear_number: the run's clearing this node task runs in.
    :param producer_state: ``dbt_build``'s state (``None``: not scheduled; ``UNKNOWN``: could not be read,
        so the done marker is final).
    """
    known = producer_state != UNKNOWN
    final = producer_state in PRODUCER_FINAL
    current = read_current(status_root)
    if current is None:
        if final:
            return _ended(
                f"{producer_task_id} ended {producer_state} before dbt ran (see its log); no dbt node was built"
            )
        return None
    older = int(current.get("clear_number") or 0) < int(clear_number or 0)
    if older and known and not final and producer_state != "running":
        return None  # dbt_build was cleared with this node: its new try will report
    attempt = status_root / current["attempt"]
    if older and producer_state not in ("success", "failed") and final:
        return _ended(
            f"{producer_task_id} ended {producer_state} in this clearing of the run; no dbt node was built"
        )
    if older and final:
        return {
            "state": "rebuild",
            "message": f"cleared after {producer_task_id} finished: rebuilding",
            "attempt": current["attempt"],
        }
    outcome = nodes_outcome(nodes, attempt)
    if outcome is not None:
        return outcome
    if read_done(attempt) is None:
        if final:
            return _ended(
                f"{producer_task_id} ended {producer_state} without reporting "
                + ", ".join(sorted(nodes))[:500]
                + " (it was killed or lost its worker; see its log)"
            )
        return None
    if known and not final:
        return None  # dbt exited; dbt_build may still retry
    return nodes_outcome(nodes, attempt, final=True)


def _ended(message: str) -> dict[str, Any]:
    return {"state": "failed", "message": message, "lines": [], "results": []}


class DbtNodeTrigger(BaseTrigger):
    """Wait for dbt nodes (one model with its tests, or a folder of models) as ``dbt_build`` reports them.

    The run's status root is derived here from the run (``status_*``, templated on the node task and
    rendered by the triggerer) and the artifact store, so ``dbt_build`` and the triggerer share no disk.

    :param unique_id: the model, seed or snapshot (or the first of ``nodes``).
    :param test_ids: the tests attached to it in the Airflow group.
    :param status_dag_id: the DAG (templated).
    :param status_run_id: the DAG run (templated).
    :param status_clear_number: the run's clearing (templated): tells a node cleared after ``dbt_build``
        finished (it rebuilds) from one cleared with it (it waits for the new build).
    :param artifact_root: the artifact store's root URI; ``None``: the deployment's default.
    :param artifact_conn_id: its Airflow connection.
    :param docs_url: link to the node in dbt docs (pushed as XCom for the "dbt docs" link).
    :param poll_interval: seconds between listings of the status folder.
    :param nodes: several nodes, ``unique_id`` -> attached tests (a folder's task); default ``{unique_id: test_ids}``.
    :param producer_task_id: the ``dbt_build`` task whose state bounds the wait.
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
        nodes: dict[str, list[str]] | None = None,
        producer_task_id: str = "dbt_build",
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
        self.nodes = nodes
        self.producer_task_id = producer_task_id

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
                "nodes": self.nodes,
                "producer_task_id": self.producer_task_id,
            },
        )

    def node_map(self) -> dict[str, list[str]]:
        return dict(self.nodes) if self.nodes else {self.unique_id: self.test_ids}

    def status_root(self) -> Any:
        return run_status_root(
            self.status_dag_id, self.status_run_id, self.artifact_root, self.artifact_conn_id
        )

    def decide(self, producer_state: str | None) -> dict[str, Any] | None:
        return decide(
            self.node_map(),
            self.status_root(),
            int(self.status_clear_number or 0),
            producer_state,
            self.producer_task_id,
        )

    async def run(self):
        status_root = await asyncio.to_thread(self.status_root)
        nodes = self.node_map()
        wanted = frozenset(
            status_file_name(u)
            for uid, tests in nodes.items()
            for u in (tests if uid.startswith("source.") else [uid, *tests])
        )
        producer = (str(self.status_dag_id), str(self.status_run_id), self.producer_task_id)
        watcher = _StatusWatcher.for_run(status_root, producer, self.poll_interval)
        while True:
            state = await watcher.wait_for(wanted)
            clear = int(self.status_clear_number or 0)
            outcome = await asyncio.to_thread(decide, nodes, status_root, clear, state, self.producer_task_id)
            if outcome is not None:
                break
            await asyncio.sleep(self.poll_interval)

        if outcome["state"] == "rebuild":  # resume on a worker, which runs dbt for these nodes
            self.log.info("%s", outcome["message"])
            yield TriggerEvent({"state": "rebuild", "message": outcome["message"]})
            return
        for line in outcome["lines"]:
            self.log.info("%s", line)
        xcoms: dict[str, Any] = {
            "return_value": {
                "state": outcome["state"],
                "message": outcome["message"],
                "results": outcome["results"],
            }
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


__all__ = ["DbtNodeTrigger", "TriggerEvent", "decide", "node_outcome", "nodes_outcome"]
