"""What every airflow-retrain operator shares: the pipeline it belongs to and its run identity."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from airflow_retrain.runs import RunIdentity


class RetrainBaseOperator(BaseOperator):
    """:param pipeline: the pipeline (spec) name; tags and scratch folders are derived from it."""

    ui_color = "#e8f0fe"

    def __init__(self, *, pipeline: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline

    def run_identity(self, context) -> RunIdentity:
        return RunIdentity.from_context(context, self.pipeline)
