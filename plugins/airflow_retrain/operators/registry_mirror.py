"""Mirror a promoted champion into the SageMaker Model Registry (a package in a group, ``Approved``)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow_retrain.operators.base import MlflowBaseOperator


class MirrorToSageMakerOperator(MlflowBaseOperator):
    """Register the new champion in the SageMaker Model Registry too (a package in a group, ``Approved``).

    Runs after ``promote``; does nothing unless the candidate was promoted. The model package group is
    created when absent; the package's metadata points at the MLflow version (name, version, run, source,
    tracking URI without credentials). Idempotent: a package already carrying this MLflow version is reused.

    :param decision: the result of :class:`PromoteModelOperator`.
    :param model_package_group: SageMaker model package group name.
    :param aws_conn_id: Airflow AWS connection (its extra ``endpoint_url`` points at a fake cloud).
    :param region: AWS region; default: the connection's.
    """

    template_fields = ("decision", "model_package_group")
    ui_color = "#ffcc80"

    def __init__(self, *, decision: dict[str, Any] | Any, model_package_group: str, aws_conn_id: str = "aws_default",
                 region: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.decision = decision
        self.model_package_group = model_package_group
        self.aws_conn_id = aws_conn_id
        self.region = region

    @cached_property
    def sagemaker_hook(self):
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        return SageMakerHook(aws_conn_id=self.aws_conn_id, region_name=self.region)

    def find_mirrored(self, name: str, version: str) -> str | None:
        """The ARN of the group's package that already mirrors ``name`` v``version``, or ``None``.

        Every page of the group is read (``list_model_packages`` returns at most 100 per call). Only packages
        whose description names this version are described, to confirm it from their metadata.
        """
        sm = self.sagemaker_hook.conn
        described_as = package_description(name, version, "")
        for page in sm.get_paginator("list_model_packages").paginate(ModelPackageGroupName=self.model_package_group):
            for summary in page.get("ModelPackageSummaryList", []):
                if not (summary.get("ModelPackageDescription") or "").startswith(described_as):
                    continue
                props = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"]).get(
                    "CustomerMetadataProperties") or {}
                if props.get("mlflow.model_name") == name and props.get("mlflow.version") == version:
                    return summary["ModelPackageArn"]
        return None

    def execute(self, context) -> dict[str, Any]:
        decision = self.decision or {}
        if not decision.get("promoted"):
            self.log.info("Not promoted (%s): nothing to mirror", decision.get("decision"))
            return {"mirrored": False, "reason": f"not promoted: {decision.get('decision')}"}
        name, version = decision["model_name"], str(decision["candidate_version"])
        mv = self.hook.get_version(name, version)
        metadata = {
            "mlflow.model_name": name, "mlflow.version": version, "mlflow.run_id": mv.run_id,
            "mlflow.source": mv.source[:1000], "mlflow.tracking_uri": self.hook.tracking_uri,
            "retrain.pipeline": self.pipeline,
        }
        group = self.model_package_group
        # The provider's call creates the group only when absent (an existing group answers False).
        if self.sagemaker_hook.create_model_package_group(group, f"MLflow model {name} (airflow-retrain)"):
            self.log.info("Created SageMaker model package group %s", group)
        arn = self.find_mirrored(name, version)
        if arn is not None:
            self.log.info("%s v%s is already mirrored as %s", name, version, arn)
            return {"mirrored": True, "model_package_arn": arn, "reused": True}
        created = self.sagemaker_hook.conn.create_model_package(
            ModelPackageGroupName=group,
            ModelPackageDescription=package_description(name, version, mv.run_id),
            ModelApprovalStatus="Approved",
            CustomerMetadataProperties=metadata,
        )
        arn = created["ModelPackageArn"]
        self.log.info("Mirrored %s v%s to SageMaker model package %s (Approved)", name, version, arn)
        return {"mirrored": True, "model_package_arn": arn, "reused": False}


def package_description(name: str, version: str, run_id: str) -> str:
    """A mirrored package's description; its prefix up to the run names the MLflow version it mirrors."""
    return f"MLflow models:/{name}/{version} (run {run_id}" + (")" if run_id else "")
