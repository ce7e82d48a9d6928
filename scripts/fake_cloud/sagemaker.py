"""What moto 5.2.5's SageMaker lacks, added to its own backend: ``StopTrainingJob``, running jobs, checks.

moto serves ``CreateTrainingJob``, ``DescribeTrainingJob``, ``ListTrainingJobs``, tags, endpoints, models,
notebooks and model packages itself; its training jobs are ``Completed`` at once and it has no
``StopTrainingJob``. :func:`install` extends moto's ``SageMakerResponse`` in this process (moto's dispatch,
parameter parsing and error serialisation stay moto's):

* ``CreateTrainingJob`` first rejects, with SageMaker's ``ValidationException`` texts, what SageMaker
  rejects and moto accepts (a duplicate name, a name, role or instance type outside botocore's service
  model, a role that does not exist in moto's IAM), then lets moto create the record and hands it to a
  :class:`~jobs.TrainingRun` that really runs the job.
* ``StopTrainingJob`` stops that run.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .config import _ROLE_ARN

if TYPE_CHECKING:
    from .server import FakeCloud

_SERVICE_MODEL_CACHE: dict[str, Any] = {}
#: The fake cloud this process serves (moto's backends are process-global, so there is one).
_ACTIVE: dict[str, FakeCloud] = {}


def _service_model():
    if "model" not in _SERVICE_MODEL_CACHE:
        import botocore.session

        _SERVICE_MODEL_CACHE["model"] = botocore.session.get_session().get_service_model("sagemaker")
    return _SERVICE_MODEL_CACHE["model"]


def training_instance_types() -> list[str]:
    """``TrainingInstanceType`` values of botocore's SageMaker service model (no hand-kept list)."""
    return list(_service_model().shape_for("TrainingInstanceType").enum)


def _constraint_problems(shape_name: str, field: str, value: Any) -> list[str]:
    """Check ``value`` against the length and pattern botocore's SageMaker model gives ``shape_name``."""
    meta = _service_model().shape_for(shape_name).metadata
    text = value if isinstance(value, str) else ""
    prefix = f"Value '{value}' at '{field}' failed to satisfy constraint: Member must"
    problems = []
    if "max" in meta and len(text) > meta["max"]:
        problems.append(f"{prefix} have length less than or equal to {meta['max']}")
    if "min" in meta and len(text) < meta["min"]:
        problems.append(f"{prefix} have length greater than or equal to {meta['min']}")
    if "pattern" in meta and not re.fullmatch(meta["pattern"], text):
        problems.append(f"{prefix} satisfy regular expression pattern: {meta['pattern']}")
    return problems


def request_problems(request: dict[str, Any]) -> str | None:
    """SageMaker's ``N validation errors detected: ...`` for a ``CreateTrainingJob`` request, or ``None``."""
    problems = _constraint_problems("TrainingJobName", "trainingJobName", request.get("TrainingJobName", ""))
    problems += _constraint_problems("RoleArn", "roleArn", request.get("RoleArn", ""))
    instance_type = (request.get("ResourceConfig") or {}).get("InstanceType")
    types = training_instance_types()
    if instance_type not in types:
        problems.append(
            f"Value '{instance_type}' at 'resourceConfig.instanceType' failed to satisfy constraint: Member must "
            f"satisfy enum value set: [{', '.join(types)}]"
        )
    if not problems:
        return None
    return f"{len(problems)} validation error{'s' if len(problems) > 1 else ''} detected: " + "; ".join(problems)


def role_exists(account: str, role_arn: str) -> bool:
    match = _ROLE_ARN.match(role_arn)
    if not match or match.group(1) != account:
        return False
    from moto.iam.models import iam_backends

    role_name = match.group(2).rsplit("/", 1)[-1]
    return any(role.name == role_name for role in iam_backends[account]["global"].roles.values())


def _create_training_job(self) -> Any:
    """moto's ``CreateTrainingJob``, checked first and then run by the fake cloud."""
    import json

    from moto.sagemaker.exceptions import ValidationError

    cloud = _ACTIVE.get("cloud")
    request = json.loads(self.body or "{}")
    if cloud is None:  # moto used without the fake cloud (mock_aws in the same process)
        return _MOTO_CREATE(self)
    if problem := request_problems(request):
        raise ValidationError(message=problem)
    account, region = self.current_account, self.region
    if cloud.config.validate_role and not role_exists(account, request["RoleArn"]):
        raise ValidationError(
            message=f"Could not assume role {request['RoleArn']}. Please ensure that the role exists and allows "
            "principal 'sagemaker.amazonaws.com' to assume the role."
        )
    with cloud.runs_lock:
        name = request["TrainingJobName"]
        existing = self.sagemaker_backend.training_jobs.get(name)
        if existing is not None:
            raise ValidationError(
                message="Training job names must be unique within an AWS account and region, and a training job "
                f"with this name already exists ({existing.arn})"
            )
        result = _MOTO_CREATE(self)
        cloud.start_run(account, region, self.sagemaker_backend.training_jobs[name], request)
    return result


def _stop_training_job(self) -> Any:
    """``StopTrainingJob`` (absent from moto): stop the fake's run of the job."""
    from moto.core.responses import EmptyResult
    from moto.sagemaker.exceptions import ValidationError

    cloud = _ACTIVE.get("cloud")
    name = self._get_param("TrainingJobName")
    run = cloud.runs.get((self.current_account, self.region, name)) if cloud else None
    if run is None:
        raise ValidationError(message="Requested resource not found.")
    if not run.request_stop():
        raise ValidationError(
            message=f"The request was rejected because the training job is in status {run.job.training_job_status}."
        )
    return EmptyResult()


_MOTO_CREATE: Any = None


def install(cloud: FakeCloud) -> None:
    """Extend moto's SageMaker in this process and make ``cloud`` the one that runs its jobs."""
    global _MOTO_CREATE
    from moto.sagemaker.responses import SageMakerResponse

    if _MOTO_CREATE is None:
        _MOTO_CREATE = SageMakerResponse.create_training_job
        SageMakerResponse.create_training_job = _create_training_job
        SageMakerResponse.stop_training_job = _stop_training_job
    _ACTIVE["cloud"] = cloud


def uninstall(cloud: FakeCloud) -> None:
    if _ACTIVE.get("cloud") is cloud:
        _ACTIVE.pop("cloud")
