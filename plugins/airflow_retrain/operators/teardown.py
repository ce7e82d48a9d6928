"""Run setup and teardown: the artifact prefix a run owns, and stopping whatever the run launched."""

from __future__ import annotations

import shutil
import time
from typing import Any

from airflow_retrain import artifacts
from airflow_retrain.operators.base import RetrainBaseOperator, TrainingBackendOperator
from airflow_retrain.teardown.ledger import CostLedger, training_run_entry


class PrepareRunOperator(RetrainBaseOperator):
    """Setup task: record what the run is (spec snapshot) under the run's prefix in the artifact store.

    :param spec: the pipeline spec as a dict, written to ``<run>/run.json``.
    :param param_schemas: the trigger form's Params (name -> JSON schema): the run's values are checked
        again here, first thing, so a value that bypassed the form (``airflow dags test -c``, an old run
        cleared) fails the run at once naming the Param, before any compute is spent.
    :return: the run key, the run's artifact URI and its tags.
    """

    ui_color = "#dddddd"

    def __init__(self, *, spec: dict[str, Any] | None = None, param_schemas: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.param_schemas = param_schemas or {}

    def _check_params(self, params: dict[str, Any]) -> None:
        import jsonschema
        from airflow.sdk.exceptions import AirflowFailException

        for name, schema in self.param_schemas.items():
            if name not in params:
                continue
            try:
                jsonschema.validate(params[name], schema)
            except jsonschema.ValidationError as e:
                where = "".join(f"[{p!r}]" for p in e.absolute_path)
                raise AirflowFailException(f"Param {name!r}{where}: {e.message}; nothing was run") from None

    def execute(self, context) -> dict[str, Any]:
        self._check_params(dict(context.get("params") or {}))
        run = self.run_identity(context)
        store = self.artifact_store
        run_path = store.run_path(run.dag_id, run.run_key)
        artifacts.write_json(
            run_path / "run.json",
            {"dag_id": run.dag_id, "run_id": run.run_id, "run_key": run.run_key, "spec": self.spec},
        )
        self.log.info("Run %s: artifacts under %s", run.run_key, artifacts.to_uri(run_path))
        return {"run_key": run.run_key, "artifacts_uri": artifacts.to_uri(run_path), "tags": run.run_tags()}


class TeardownRunOperator(TrainingBackendOperator):
    """Teardown task: stop every job this run launched that still runs, clean up, report compute and cost.

    Runs as an Airflow teardown, so it also runs when training or any other task failed. Jobs are found by
    the run's tags, not by XCom, so a job whose submitting task crashed is found too.

    :param backend: training backend name; ``backend_config`` holds its settings.
    :param hourly_price_usd: price override, as for training.
    :param keep_scratch: keep the run's scratch artifacts (``dataset/``, ``training/``, ``dbt/``) for debugging.
    :param warehouse_conn_id: the warehouse holding the cost ledger (each job's cost is recorded there).
    :param weekly_budget_usd: the spec's ``budget.weekly_usd``: warn when this ISO week's spend crosses it.

    Scratch is the run's ``dataset/``, ``training/`` and ``dbt/`` prefixes in the artifact store (registered models
    live on in MLflow, which copied them) and this worker's local scratch folder. Once they are gone, a
    cleared run trains again instead of reusing the completed job.
    """

    ui_color = "#ffcccc"

    def __init__(
        self,
        *,
        keep_scratch: bool = False,
        warehouse_conn_id: str | None = "retrain_warehouse",
        weekly_budget_usd: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.keep_scratch = keep_scratch
        self.warehouse_conn_id = warehouse_conn_id
        self.weekly_budget_usd = weekly_budget_usd
        self._week_spent: float | None = None

    def execute(self, context) -> dict[str, Any]:
        run = self.run_identity(context)
        backend = self.training_backend
        stopped, jobs, errors, entries = [], [], [], []
        for job in backend.find_jobs(run.run_tags()):
            if not job.state.terminal:
                self.log.warning("Training job %s is still %s: stopping it", job.job_name, job.state.value)
                try:
                    job = backend.stop(job.job_name)
                    stopped.append(job.job_name)
                except Exception as e:  # noqa: BLE001 - keep going; report every job
                    errors.append(f"stop {job.job_name}: {e}")
            cost = backend.cost(job, self.hourly_price_usd)
            entries.append(training_run_entry(self.pipeline, run.dag_id, run.run_key, job, cost, time.time()))
            backend.cleanup(job.job_name)
            jobs.append(
                {
                    "job_name": job.job_name,
                    "state": job.state.value,
                    "compute_seconds": job.billable_seconds,
                    "cost_usd": cost.usd,
                    "hourly_price_usd": cost.hourly_price_usd,
                }
            )
        removed = None
        if not self.keep_scratch:
            run_path = self.artifact_store.run_path(run.dag_id, run.run_key)
            removed = []
            for name in artifacts.SCRATCH_PREFIXES:
                try:
                    if artifacts.delete(run_path / name):
                        removed.append(artifacts.to_uri(run_path / name))
                except Exception as e:  # noqa: BLE001 - report it with the rest
                    errors.append(f"delete {artifacts.to_uri(run_path / name)}: {e}")
            local = run.scratch_dir()
            if local.exists():
                shutil.rmtree(local, ignore_errors=True)
                removed.append(local.as_uri())
        result = {
            "stopped_jobs": stopped,
            "jobs": jobs,
            "compute_seconds": round(sum(j["compute_seconds"] for j in jobs), 3),
            # A job without a known price counts as unknown, not as free.
            "cost_usd": round(sum(j["cost_usd"] for j in jobs if j["cost_usd"] is not None), 6),
            "cost_unknown_jobs": [j["job_name"] for j in jobs if j["cost_usd"] is None],
            "scratch_removed": removed,
            "errors": errors,
        }
        self.log.info(
            "Teardown: %d job(s), %d stopped, %.1f compute s, est. $%.4f, scratch removed: %s",
            len(jobs), len(stopped), result["compute_seconds"], result["cost_usd"], removed,
        )
        errors.extend(self._record_cost(entries))
        if self._week_spent is not None:  # the report (and its notifier) tell a budget crossing
            result.update(week_usd=round(self._week_spent, 6), weekly_budget_usd=self.weekly_budget_usd)
        if errors:
            raise RuntimeError("teardown could not stop or clean up: " + "; ".join(errors))
        return result

    def _record_cost(self, entries: list) -> list[str]:
        """Write the run's jobs to the cost ledger and warn over the weekly budget; return errors."""
        self._week_spent: float | None = None
        if not entries:
            return []
        ledger = CostLedger.from_connection(self.warehouse_conn_id)
        try:
            ledger.write(entries)
            spent = ledger.week_usd(self.pipeline, time.time()) if self.weekly_budget_usd else None
        except Exception as e:  # noqa: BLE001 - reported as a teardown error; the retry writes it again
            return [f"cost ledger ({ledger.params.describe()}): {type(e).__name__}: {e}"]
        self._week_spent = spent
        self.log.info("Cost ledger: %d job(s) recorded in %s", len(entries), ledger.describe())
        if spent is not None and spent > self.weekly_budget_usd:
            self.log.warning(
                "Budget: pipeline %s spent $%.2f this week, over its weekly budget of $%.2f (spec budget.weekly_usd)",
                self.pipeline, spent, self.weekly_budget_usd,
            )
        return []
