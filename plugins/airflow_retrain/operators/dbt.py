"""DbtBuildOperator: build the pipeline's dbt selection; dbt tests are data-quality evidence."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_retrain.hooks.dbt import DbtCommandError, DbtHook
from airflow_retrain.hooks.warehouse import WarehouseHook
from airflow_retrain.operators.base import RetrainBaseOperator


class DbtBuildOperator(RetrainBaseOperator):
    """Run ``dbt build`` for a selection, in one dbt invocation.

    A failing model or test fails the task without retries (rerunning cannot fix the data) and the message
    names every failing node; anything else (a connection error) fails normally and is retried.

    :param project_dir: dbt project folder.
    :param select: dbt selectors, as for ``--select``.
    :param exclude: dbt selectors, as for ``--exclude``.
    :param target: profile target; default the warehouse connection's type.
    :param warehouse_conn_id: Airflow connection mapped onto the profile's env vars (see :class:`WarehouseHook`).
    :param profiles_dir: folder of ``profiles.yml``; default the project folder.
    :return: a summary: models built, tests passed/failed, relations of built models.
    """

    template_fields = ("select", "exclude", "target")
    ui_color = "#ff694b"

    def __init__(
        self,
        *,
        project_dir: str,
        select: list[str],
        exclude: list[str] | None = None,
        target: str | None = None,
        warehouse_conn_id: str | None = WarehouseHook.default_conn_name,
        profiles_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.project_dir = project_dir
        self.select = select
        self.exclude = exclude
        self.target = target
        self.warehouse_conn_id = warehouse_conn_id
        self.profiles_dir = profiles_dir

    @cached_property
    def warehouse_hook(self) -> WarehouseHook:
        return WarehouseHook(self.warehouse_conn_id)

    @cached_property
    def hook(self) -> DbtHook:
        return DbtHook(self.project_dir, profiles_dir=self.profiles_dir, env=self.warehouse_hook.dbt_env())

    def execute(self, context) -> dict[str, Any]:
        run = self.run_identity(context)
        target_path = run.scratch_dir() / "dbt" / f"try-{context['ti'].try_number}"
        self.log.info("Warehouse: %s", self.warehouse_hook.params.describe())
        try:
            result = self.hook.run(
                "build", select=self.select, exclude=self.exclude, target=self.target, target_path=target_path
            )
        except DbtCommandError as e:
            if e.result.failed:
                raise AirflowFailException(str(e)) from None
            raise
        summary = result.summary()
        summary["warehouse"] = self.warehouse_hook.params.describe()
        # Also under its own key, so a downstream task can take ``dbt_task.output["relations"]``.
        context["ti"].xcom_push(key="relations", value=summary["relations"])
        self.log.info(
            "dbt build: %d models built, %d/%d tests passed (%d warned) in %.1f s",
            summary["models_built"],
            summary["tests_passed"],
            summary["tests_total"],
            summary["tests_warned"],
            summary["elapsed_seconds"],
        )
        return summary
