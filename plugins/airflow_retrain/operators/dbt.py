"""The dbt stage's operators: one ``dbt build`` (the producer), per-node tasks that complete from its
results, and the evidence gate (test results + source freshness → a Verdict).

- :class:`DbtBuildOperator` (``dbt_build``) runs the selection in ONE ``dbt build`` (dbt's own threads,
  partial parsing kept between runs) and writes each node's result as dbt finishes it.
- :class:`DbtNodeOperator` (one per model, seed and snapshot -- or, above ``max_node_tasks`` nodes, one per
  model folder -- in the ``dbt`` task group) starts in the triggerer and completes as success, failed or
  skipped when its nodes and their tests are done: the grid shows per-model state and timing at the cost
  of one ``dbt build``. Cleared after ``dbt_build`` finished, it rebuilds just its nodes
  (``dbt build -s <node>``) on a worker.
- :class:`DbtEvidenceGateOperator` (``gate_dbt``) turns ``run_results`` and ``dbt source freshness`` into a
  data-quality :class:`~airflow_retrain.gates.base.Verdict` that blocks training.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow.triggers.base import StartTriggerArgs

from airflow_retrain.dbt.results import (
    STATUS_RUN_TEMPLATES,
    run_status_root,
    start_attempt,
    verdict_from_results,
    write_done,
    write_node_status,
)
from airflow_retrain.hooks.dbt import DbtCommandError, DbtHook, DbtSelectionError
from airflow_retrain.hooks.warehouse import WarehouseHook
from airflow_retrain.links.dbt import DbtDocsLink
from airflow_retrain.operators.base import RetrainBaseOperator


class DbtBuildOperator(RetrainBaseOperator):
    """Run ``dbt build`` for a selection, in one dbt invocation; report each node as dbt finishes it.

    Node failures (a failing test, a model the database rejects) and compile errors fail the task without
    retries, naming each node and its cause; a timeout or a connection error fails normally and is retried.

    :param project_dir: dbt project folder.
    :param select: dbt selectors, as for ``--select``.
    :param exclude: dbt selectors, as for ``--exclude``.
    :param selector: a YAML selector of the project, as for ``--selector``.
    :param target: profile target; default the profile's own default.
    :param warehouse_conn_id: Airflow connection mapped onto the profile's env vars (see :class:`WarehouseHook`);
        for a project without ``profiles.yml``, a profile is generated from it (no secret in the file).
    :param profiles_dir: folder of ``profiles.yml``; default the project folder.
    :param dbt_timeout: seconds before dbt (and its children) is killed; default ``execution_timeout``.
    :param env_passthrough: names of worker environment variables dbt may also see.
    :param run_deps: run ``dbt deps`` first when the project declares packages that are not installed.
    :param select_param: a trigger-form Param whose value, when set, is this run's selection instead of
        ``select`` and ``selector`` (read at run time; an override that selects nothing fails naming the Param).
    :return: a summary: models/seeds/snapshots built, tests passed/failed, relations, target.
    """

    template_fields = ("select", "exclude", "selector", "target")
    ui_color = "#ff694b"

    def __init__(
        self,
        *,
        project_dir: str,
        select: list[str] | None = None,
        exclude: list[str] | None = None,
        selector: str | None = None,
        target: str | None = None,
        warehouse_conn_id: str | None = WarehouseHook.default_conn_name,
        profiles_dir: str | None = None,
        dbt_timeout: float | None = None,
        env_passthrough: list[str] | None = None,
        run_deps: bool = True,
        select_param: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.select_param = select_param
        self.project_dir = project_dir
        self.select = select
        self.exclude = exclude
        self.selector = selector
        self.target = target
        self.warehouse_conn_id = warehouse_conn_id
        self.profiles_dir = profiles_dir
        self.dbt_timeout = dbt_timeout
        self.env_passthrough = env_passthrough
        self.run_deps = run_deps

    @cached_property
    def warehouse_hook(self) -> WarehouseHook:
        return WarehouseHook(self.warehouse_conn_id)

    def _profile(self, scratch: Path) -> tuple[str, dict[str, str]]:
        """The profiles folder and the env the profile reads; generated from the connection if the project has none."""
        from airflow.sdk.log import mask_secret

        from airflow_retrain.dbt.profiles import profile_from_connection, project_profile_name

        params = self.warehouse_hook.params
        if params.password:
            mask_secret(params.password)
        profiles_dir = Path(self.profiles_dir or self.project_dir)
        if (profiles_dir / "profiles.yml").is_file():
            return str(profiles_dir), self.warehouse_hook.dbt_env()
        text, env = profile_from_connection(project_profile_name(self.project_dir), params)
        generated = scratch / "profile"
        generated.mkdir(parents=True, exist_ok=True)
        (generated / "profiles.yml").write_text(text)
        self.log.info(
            "No profiles.yml in %s: generated one from connection %s", profiles_dir, self.warehouse_conn_id
        )
        return str(generated), env

    @cached_property
    def hook(self) -> DbtHook:
        return DbtHook(self.project_dir)

    def _configure_hook(self, scratch: Path, target_name: str) -> None:
        from airflow_retrain.dbt.manifest import partial_parse_file

        profiles_dir, env = self._profile(scratch)
        hook = self.hook
        hook.profiles_dir = Path(profiles_dir)
        hook.env = env
        hook.env_passthrough = tuple(self.env_passthrough or ())
        hook.partial_parse_file = partial_parse_file(self.project_dir, target_name)

    def _refresh_dbt_cache(self, target_path: Path, fingerprint: str):
        """Cache the manifest this build wrote and dbt's selection on it, for the next DAG parse."""
        from airflow_retrain.dbt.selection import refresh_after_build

        try:
            selection = refresh_after_build(
                self.project_dir, target_path / "manifest.json", fingerprint, self.select, self.exclude,
                self.selector, profiles_dir=self.hook.profiles_dir, target=self.target, env=self.hook.child_env(),
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001 -- the cache only speeds up the next parse; the build stands
            self.log.warning("Could not cache dbt's selection for the next DAG parse: %s", e)
            return None
        if selection is not None:
            self.log.info("dbt selection cached (%d nodes, %s)", len(selection.unique_ids), selection.where())
        return selection

    def execute(self, context) -> dict[str, Any]:
        from airflow_retrain.dbt.manifest import project_fingerprint
        from airflow_retrain.dbt.profiles import DbtProfileError, resolve_target
        from airflow_retrain.params import dbt_selection

        self.select, self.selector, override = dbt_selection(context.get("params"), self.select_param,
                                                             self.select, self.selector)
        if override:
            self.log.info("dbt selection from the run's Param %r: %s (instead of the spec's)", self.select_param, override)
        run = self.run_identity(context)
        dag_run = context.get("dag_run")
        store = self.artifact_store
        status_root = run_status_root(run.dag_id, run.run_id, store.root_uri, store.conn_id)
        # each try and clearing writes a folder of its own and names it current: the node tasks tell a
        # node cleared with dbt_build (wait for this try) from one cleared after it (rebuild)
        status_dir = start_attempt(
            status_root, getattr(dag_run, "clear_number", 0) or 0, context["ti"].try_number
        )
        self.log.info("Per-node status for the dbt group: %s", status_dir)
        scratch = run.scratch_dir() / "dbt"
        target_path = scratch / f"try-{context['ti'].try_number}"
        try:
            self._configure_hook(scratch, self.target or "default")
            resolved = resolve_target(
                self.project_dir, self.hook.profiles_dir, self.target, self.hook.child_env()
            )
        except DbtProfileError as e:
            self._done(status_dir, "failed", str(e))
            raise AirflowFailException(str(e)) from None
        self.hook.partial_parse_file = (
            self.hook.partial_parse_file.parent.parent / resolved.target / "partial_parse.msgpack"
        )
        self.log.info("dbt writes to %s", resolved.describe())
        timeout = self.dbt_timeout or (
            self.execution_timeout.total_seconds() if self.execution_timeout else None
        )
        try:
            if self.run_deps:
                self._deps(target_path)
            fingerprint = project_fingerprint(self.project_dir)
            result = self.hook.run(
                "build",
                select=self.select,
                exclude=self.exclude,
                selector=self.selector,
                target=self.target,
                target_path=target_path,
                timeout=timeout,
                on_node_finished=lambda r: write_node_status(status_dir, r),
            )
        except DbtCommandError as e:
            confirmed = self._refresh_dbt_cache(target_path, fingerprint)
            if isinstance(e, DbtSelectionError) and confirmed is not None and confirmed.problem():
                e = DbtSelectionError(f"{e}: {confirmed.problem()}", e.result)
            if override and isinstance(e, DbtSelectionError):
                e = DbtSelectionError(f"Param {self.select_param!r} = {override!r} selects no dbt node: {e}", e.result)
            if e.result is not None:
                for node in e.result.nodes:
                    write_node_status(status_dir, node)
                verdict = verdict_from_results(e.result.nodes)
                context["ti"].xcom_push(key="verdict", value=verdict.to_dict())
            self._done(status_dir, "failed", str(e))
            if not e.retryable:
                raise AirflowFailException(str(e)) from None
            raise
        except BaseException as e:
            self._done(status_dir, "failed", f"dbt_build failed: {e}")
            raise
        for node in result.nodes:  # run_results.json is authoritative (messages, nodes missed by the log)
            write_node_status(status_dir, node)
        if override and not result.nodes:  # e.g. an empty intersection: dbt warns of no criterion, builds nothing
            confirmed = self._refresh_dbt_cache(target_path, fingerprint)
            why = (confirmed.problem() if confirmed else None) or "dbt build ran no node"
            message = f"Param {self.select_param!r} = {override!r} selects no dbt node: {why}; nothing was built"
            self._done(status_dir, "failed", message)
            raise AirflowFailException(message)
        self._done(status_dir, "success", "dbt build finished" + (f" (Param {self.select_param!r})" if override else ""))
        self._refresh_dbt_cache(target_path, fingerprint)
        summary = result.summary()
        summary["warehouse"] = resolved.describe()
        summary["target"] = resolved.target
        summary["profile"] = resolved.profile
        verdict = verdict_from_results(result.nodes)
        context["ti"].xcom_push(key="verdict", value=verdict.to_dict())
        # Also under its own key, so a downstream task can take ``dbt_task.output["relations"]``.
        context["ti"].xcom_push(key="relations", value=summary["relations"])
        self.log.info(
            "dbt build: %d models, %d seeds, %d snapshots built, %d/%d tests passed (%d warned) in %.1f s on %s",
            summary["models_built"],
            summary["seeds_loaded"],
            summary["snapshots_built"],
            summary["tests_passed"],
            summary["tests_total"],
            summary["tests_warned"],
            summary["elapsed_seconds"],
            summary["warehouse"],
        )
        return summary

    def _deps(self, target_path: Path) -> None:
        project = Path(self.project_dir)
        declared = (project / "packages.yml").is_file() or (project / "dependencies.yml").is_file()
        if declared and not (project / "dbt_packages").is_dir():
            self.hook.run("deps", target_path=target_path)

    @staticmethod
    def _done(status_dir: Any, state: str, message: str) -> None:
        write_done(status_dir, state, message)

    def on_kill(self) -> None:
        self.hook.kill()


class DbtNodeOperator(BaseOperator):
    """dbt nodes (one model, seed or snapshot with its tests, or a folder of them) in the Airflow grid.

    Starts in the triggerer (``start_from_trigger``): no worker process per task. It reads the statuses
    ``dbt_build`` writes to the run's artifact store, so give it the same ``artifact_root`` and
    ``artifact_conn_id`` as ``dbt_build``. Run on a worker instead (``dag.test()``, ``airflow dags test``,
    ``stream=False``), it reports at once when ``dbt_build`` has, and otherwise reschedules itself every
    ``RESCHEDULE_SECONDS`` (never blocking the loop that must run ``dbt_build``). Either way it fails,
    naming why, once ``dbt_build`` is in a final state without having reported its nodes, or ``timeout``
    after the run started. Cleared after ``dbt_build`` finished, it runs ``dbt build --select <its nodes>``
    itself (tests included); a failed dbt test is a data failure, never retried (``retries=0``).

    :param unique_id: the node's dbt ``unique_id`` (for a folder: its first node).
    :param test_ids: dbt tests attached to this node.
    :param nodes: several nodes, ``unique_id`` -> attached tests (a folder's task).
    :param rebuild_select: the dbt selection of just these nodes (``dbt build --select``) for a rebuild.
    :param status_dag_id: the DAG whose run's statuses to read (templated; default ``{{ ti.dag_id }}``).
    :param status_run_id: the run (templated; default ``{{ run_id }}``).
    :param status_clear_number: the run's clearing (templated; default ``{{ dag_run.clear_number or 0 }}``).
    :param artifact_root: the artifact store's root URI (as for ``dbt_build``); ``None``: the deployment's.
    :param artifact_conn_id: the Airflow connection for it.
    :param docs_url: the node in dbt docs (the task's "dbt docs" link).
    :param timeout: how long to wait for ``dbt_build`` before failing.
    :param stream: start in the triggerer (``start_from_trigger``) beside ``dbt_build``; ``False``: run on a
        worker after it.
    :param producer_task_id: the ``dbt_build`` task.
    :param build_kwargs: what a rebuild needs of ``dbt_build`` (``pipeline``, ``project_dir``, ``target``,
        ``warehouse_conn_id``, ``profiles_dir``); without them a cleared node fails, saying to clear ``dbt_build``.
    """

    RESCHEDULE_SECONDS = 5
    template_fields = ("status_dag_id", "status_run_id", "status_clear_number")
    ui_color = "#ffb199"
    operator_extra_links = (DbtDocsLink(),)

    def __init__(
        self,
        *,
        unique_id: str,
        test_ids: list[str],
        nodes: dict[str, list[str]] | None = None,
        rebuild_select: list[str] | None = None,
        status_dag_id: str = STATUS_RUN_TEMPLATES["status_dag_id"],
        status_run_id: str = STATUS_RUN_TEMPLATES["status_run_id"],
        status_clear_number: int | str = STATUS_RUN_TEMPLATES["status_clear_number"],
        artifact_root: str | None = None,
        artifact_conn_id: str | None = None,
        docs_url: str | None = None,
        timeout: timedelta | None = None,
        stream: bool = True,
        producer_task_id: str = "dbt_build",
        build_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not stream:
            kwargs.setdefault("trigger_rule", "all_done")  # report failed and skipped nodes too
        super().__init__(**kwargs)
        self.unique_id = unique_id
        self.test_ids = test_ids
        self.nodes = nodes
        self.rebuild_select = rebuild_select
        self.status_dag_id = status_dag_id
        self.status_run_id = status_run_id
        self.status_clear_number = status_clear_number
        self.artifact_root = artifact_root
        self.artifact_conn_id = artifact_conn_id
        self.docs_url = docs_url
        self.timeout = timeout
        self.producer_task_id = producer_task_id
        self.build_kwargs = build_kwargs
        self.start_from_trigger = stream
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls="airflow_retrain.triggers.dbt.DbtNodeTrigger",
            trigger_kwargs=self._trigger_kwargs(),
            next_method="execute_complete",
            timeout=timeout,
        )

    def _trigger_kwargs(self) -> dict[str, Any]:
        return {
            "unique_id": self.unique_id,
            "test_ids": self.test_ids,
            "status_dag_id": self.status_dag_id,
            "status_run_id": self.status_run_id,
            "status_clear_number": self.status_clear_number,
            "artifact_root": self.artifact_root,
            "artifact_conn_id": self.artifact_conn_id,
            "docs_url": self.docs_url,
            "nodes": self.nodes,
            "producer_task_id": self.producer_task_id,
        }

    def execute(self, context) -> dict[str, Any] | None:
        """On a worker: report the nodes from ``dbt_build``'s results, rebuild them, or reschedule (never defer:
        ``dag.test()`` would run the trigger in line and never reach ``dbt_build``)."""
        from datetime import datetime

        from airflow.sdk.exceptions import AirflowRescheduleException

        from airflow_retrain.triggers.dbt import DbtNodeTrigger, lookup_producer_state

        trigger = DbtNodeTrigger(**self._trigger_kwargs())  # the rendered fields
        state = lookup_producer_state(str(self.status_dag_id), str(self.status_run_id), self.producer_task_id)
        outcome = trigger.decide(state)
        if outcome is None:
            now = datetime.now(UTC)
            # As Airflow's sensors in reschedule mode: the bound runs from this task's first check (a run's
            # start or logical date can lie far in the past: a backfill, `dags test -e <date>`).
            first = getattr(context.get("ti"), "get_first_reschedule_date", None)
            started = (first(context) if first else None) or now
            if self.timeout is not None and now - started > self.timeout:
                raise AirflowFailException(
                    f"{self.producer_task_id} did not report {self._what()} within {self.timeout} of this task's first check "
                    f"(it is {state or 'not scheduled'})"
                )
            self.log.info(
                "%s is %s: checking again in %s s",
                self.producer_task_id,
                state or "not scheduled",
                self.RESCHEDULE_SECONDS,
            )
            raise AirflowRescheduleException(now + timedelta(seconds=self.RESCHEDULE_SECONDS))
        if outcome["state"] == "rebuild":
            return self._rebuild(context, trigger)
        return self._report(context, outcome)

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Resumed from the trigger: only to rebuild (the trigger ends the task itself otherwise)."""
        from airflow_retrain.triggers.dbt import DbtNodeTrigger

        if event and event.get("state") == "rebuild":
            return self._rebuild(context, DbtNodeTrigger(**self._trigger_kwargs()))
        return event

    def _what(self) -> str:
        return f"{len(self.nodes)} dbt nodes" if self.nodes else self.unique_id

    def _report(self, context, outcome: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        for line in outcome["lines"]:
            self.log.info("%s", line)
        if self.docs_url:
            context["ti"].xcom_push(key="dbt_docs_url", value=self.docs_url)
        if outcome["state"] == "failed":
            raise AirflowFailException(outcome["message"])
        if outcome["state"] == "skipped":
            raise AirflowSkipException(outcome["message"])
        self.log.info("%s", outcome["message"])
        return {"state": outcome["state"], "message": outcome["message"], "results": outcome["results"]}

    def _rebuild(self, context, trigger) -> dict[str, Any]:
        """``dbt build --select <these nodes>`` (their tests included), statuses written over the build's."""
        from airflow_retrain.dbt.results import read_current
        from airflow_retrain.triggers.dbt import nodes_outcome

        if not self.build_kwargs or not self.rebuild_select:
            raise AirflowFailException(
                f"{self.task_id} was cleared after {self.producer_task_id} finished, but it has no dbt project to "
                f"rebuild {self._what()} with: clear {self.producer_task_id} instead"
            )
        root = trigger.status_root()
        attempt = root / read_current(root)["attempt"]
        builder = DbtBuildOperator(
            task_id=f"{self.task_id}__rebuild", select=self.rebuild_select,
            artifact_root=self.artifact_root, artifact_conn_id=self.artifact_conn_id, **self.build_kwargs,
        )  # fmt: skip
        scratch = builder.run_identity(context).scratch_dir() / "dbt"
        builder._configure_hook(scratch, builder.target or "default")
        self.log.info(
            "Cleared after %s finished: dbt build --select %s",
            self.producer_task_id,
            " ".join(self.rebuild_select),
        )
        try:
            result = builder.hook.run(
                "build", select=self.rebuild_select, target=builder.target,
                target_path=scratch / f"rebuild-{self.task_id}-{context['ti'].try_number}",
                on_node_finished=lambda r: write_node_status(attempt, r),
            )  # fmt: skip
        except DbtCommandError as e:
            for node in e.result.nodes if e.result else []:
                write_node_status(attempt, node)
            if not e.retryable:  # a failed test is a data failure: no retry, named with its cause
                raise AirflowFailException(str(e)) from None
            raise
        for node in result.nodes:
            write_node_status(attempt, node)
        outcome = nodes_outcome(trigger.node_map(), attempt, final=True)
        return self._report(context, outcome)


class DbtEvidenceGateOperator(RetrainBaseOperator):
    """dbt's results as a data-quality gate: failing/erroring tests or a source past ``error_after`` block training.

    Reads the build's per-node verdict (XCom ``verdict`` of ``dbt_build``), runs ``dbt source freshness``
    for the sources the selection reads, and logs the verdict (task log, XCom, and the MLflow run of the
    pipeline's experiment when ``mlflow_conn_id`` is set).

    :param build_verdict: the ``dbt_build`` task's verdict; default: its XCom ``verdict``, pulled at run
        time (the gate runs even when ``dbt_build`` failed, so a failed build's verdict is recorded too).
    :param build_task_id: the producer task, when ``build_verdict`` is not given.
    :param project_dir: dbt project folder.
    :param sources: ``source:`` selectors to check for freshness (none: skip freshness).
    :param target: profile target.
    :param warehouse_conn_id: see :class:`DbtBuildOperator`.
    :param profiles_dir: see :class:`DbtBuildOperator`.
    :param mlflow_conn_id: where to record the verdict; ``None`` to skip.
    :param experiment: MLflow experiment for the record.
    :return: the verdict as a dict (``{"gate": "dbt", "passed", "message", "checks", ...}``).
    """

    template_fields = ("build_verdict", "sources", "target")
    ui_color = "#fde2d9"

    def __init__(
        self,
        *,
        project_dir: str,
        build_verdict: Any = None,
        build_task_id: str = "dbt_build",
        sources: list[str] | None = None,
        target: str | None = None,
        warehouse_conn_id: str | None = WarehouseHook.default_conn_name,
        profiles_dir: str | None = None,
        mlflow_conn_id: str | None = None,
        experiment: str | None = None,
        dbt_timeout: float | None = 600,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.build_verdict = build_verdict
        self.build_task_id = build_task_id
        self.project_dir = project_dir
        self.sources = sources
        self.target = target
        self.warehouse_conn_id = warehouse_conn_id
        self.profiles_dir = profiles_dir
        self.mlflow_conn_id = mlflow_conn_id
        self.experiment = experiment
        self.dbt_timeout = dbt_timeout

    @cached_property
    def builder(self) -> DbtBuildOperator:
        """The build operator's profile logic, reused (never run)."""
        return DbtBuildOperator(
            task_id=f"{self.task_id}__profile",
            pipeline=self.pipeline,
            project_dir=self.project_dir,
            target=self.target,
            warehouse_conn_id=self.warehouse_conn_id,
            profiles_dir=self.profiles_dir,
        )

    def execute(self, context) -> dict[str, Any]:
        from airflow_retrain.gates.base import Check, Verdict

        build = self.build_verdict or context["ti"].xcom_pull(task_ids=self.build_task_id, key="verdict")
        if build:
            checks = list(Verdict.from_dict(build).checks)
        else:
            checks = [
                Check(
                    name=self.build_task_id, observed=None, min=None, max=None, passed=False,
                    reason=f"{self.build_task_id} produced no dbt results (it failed before dbt ran a node; see its log)",
                )
            ]  # fmt: skip
        if self.sources and build:
            scratch = self.run_identity(context).scratch_dir() / "dbt"
            builder = self.builder
            builder._configure_hook(scratch, self.target or "default")
            try:
                freshness = builder.hook.run_freshness(
                    select=self.sources,
                    target=self.target,
                    target_path=scratch / f"freshness-{context['ti'].try_number}",
                    timeout=self.dbt_timeout,
                )
            except DbtCommandError as e:
                if not e.retryable:
                    raise AirflowFailException(str(e)) from None
                raise
            checks += verdict_from_results([], freshness).checks
        verdict = Verdict(
            gate="dbt",
            passed=all(c.passed for c in checks),
            message=verdict_from_checks(checks),
            checks=checks,
        )
        for check in verdict.checks:
            if not check.passed or " warn" in check.reason:
                self.log.log(
                    30 if check.passed else 40, "%s %s", "WARN" if check.passed else "FAIL", check.reason
                )
        self.log.info("%s", verdict.message)
        self._record(context, verdict)
        if not verdict.passed:  # the run report names the failed checks from these, as for the other gates
            context["ti"].xcom_push(key="verdicts", value=[verdict.to_dict()])
            raise AirflowFailException(verdict.message)
        return verdict.to_dict()

    def _record(self, context, verdict) -> None:
        if not self.mlflow_conn_id:
            return
        try:
            from airflow_retrain.hooks.mlflow import MlflowHook

            run = self.run_identity(context)
            hook = MlflowHook(self.mlflow_conn_id)
            exp = hook.ensure_experiment(self.experiment or f"retrain/{self.pipeline}")
            mlrun = hook.client.create_run(exp, run_name=f"dbt-evidence-{run.run_key}", tags=run.job_tags())
            hook.log_dict(mlrun.info.run_id, verdict.to_dict(), "gates/dbt.json")
            hook.set_run_tags(
                mlrun.info.run_id,
                {
                    "retrain.gate.dbt": "passed" if verdict.passed else "failed",
                    "retrain.gate.dbt.message": verdict.message[:4000],
                },
            )
            hook.client.set_terminated(mlrun.info.run_id, status="FINISHED" if verdict.passed else "FAILED")
            self.log.info("dbt verdict recorded on MLflow run %s", mlrun.info.run_id)
        except Exception as e:  # the verdict stands; its record is best effort, and said so
            self.log.warning("could not record the dbt verdict in MLflow: %s", e)


def verdict_from_checks(checks) -> str:
    failed = [c for c in checks if not c.passed]
    warned = [c for c in checks if c.passed and " warn" in c.reason]
    if failed:
        return f"dbt evidence failed ({len(failed)} of {len(checks)} checks): " + "; ".join(
            c.reason for c in failed
        )
    message = f"dbt evidence passed: {len(checks)} checks"
    if warned:
        message += f", {len(warned)} warned: " + "; ".join(c.reason for c in warned)
    return message
