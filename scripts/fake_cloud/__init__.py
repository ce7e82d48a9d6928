"""A fake AWS cloud on loopback: moto's server, extended so SageMaker training jobs really run.

``python scripts/fake_cloud [--port N] [--state-dir D]`` serves S3, SageMaker, CloudWatch,
CloudWatch Logs, IAM and STS (moto 5, in-process ``ThreadedMotoServer``-style) on ``127.0.0.1`` and
prints the ``AIRFLOW_CONN_AWS_DEFAULT`` to export. Where moto falls short for training jobs it is
extended in the same process:

* ``CreateTrainingJob`` runs the job: a background runner downloads ``sourcedir.tar.gz``
  (hyperparameters ``sagemaker_submit_directory`` / ``sagemaker_program``, JSON-encoded like the
  SageMaker SDK writes them) and every ``S3Prefix`` channel from S3 into a SageMaker container layout
  (``<root>/input/data/<channel>``, ``<root>/model``, ``<root>/output``) and runs the program with
  the training toolkit's environment (``SM_CHANNEL_*``, ``SM_HPS``, ``SM_MODEL_DIR`` ...,
  ``--key value`` arguments) and an allow-listed environment (no host secrets). Status moves
  ``InProgress`` → ``Completed`` / ``Failed`` / ``Stopped`` with the secondary statuses and their
  transitions, ``TrainingStartTime``/``TrainingEndTime``, ``TrainingTimeInSeconds`` and
  ``BillableTimeInSeconds``; ``model.tar.gz`` and ``output.tar.gz`` are written to
  ``<S3OutputPath>/<job>/output/``; stdout/stderr go to CloudWatch Logs
  (``/aws/sagemaker/TrainingJobs``, stream ``<job>/algo-1-<epoch>``); ``MetricDefinitions`` are
  matched against the log into ``FinalMetricDataList``.
* ``StopTrainingJob`` (absent from moto) stops the run: SIGTERM to the scripts,
  then every process carrying the job's token is killed after the grace period; status
  ``Stopped``. A job is never reported terminal while a process of it still runs.
* A duplicate ``CreateTrainingJob`` name, an instance type that is not in botocore's SageMaker
  service model and a role that does not exist in (moto's) IAM are rejected with
  ``ValidationException``, like SageMaker does.
* Test controls under ``/fake-cloud/`` on the same port: API call counts per operation, injected
  faults (``ThrottlingException``, ``ResourceLimitExceeded``, ``AccessDeniedException`` ... N times
  for an operation), job faults (the next jobs end ``Failed`` with a given ``FailureReason``),
  run-time knobs (minimum training time, start-up delay, stop grace period), a spot-instance
  reclaim of a running job, and a reset. See :class:`FakeCloudClient`.

``InstanceCount: N`` runs N hosts (``algo-1`` .. ``algo-N``) with ``SM_HOSTS``, ``SM_CURRENT_HOST`` and
``resourceconfig.json`` as SageMaker gives them; a host that dies fails the job and stops the others.
The container and the process supervision are the local backend's own
(:mod:`airflow_retrain.training.container`, :func:`airflow_retrain.training.supervisor.run_hosts`).

Modules: ``config`` (names, knobs), ``faults`` (call counts, injected faults), ``sagemaker`` (what moto's
SageMaker lacks, added to its backend), ``jobs`` and ``storage`` (a running job), ``server`` (the WSGI layer
and controls), ``client`` (:class:`FakeCloudClient`, :func:`start_fake_cloud`), ``cli`` (``make fake-cloud``).
Tests and ``make`` share this one implementation: put ``scripts/`` on ``sys.path`` (``tests/fakes``) and
call :func:`start_fake_cloud`.
"""

from __future__ import annotations

from .cli import main
from .client import FakeCloudClient, FakeCloudHandle, start_fake_cloud
from .config import DEFAULT_ACCESS_KEY, DEFAULT_HOST, DEFAULT_PORT, DEFAULT_REGION, LOG_GROUP, FakeCloudConfig
from .faults import ApiCallLog, Fault, FaultPlan, JobFault, JobFaultPlan
from .jobs import TrainingRun
from .sagemaker import training_instance_types
from .server import FakeCloud

__all__ = [
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_REGION",
    "LOG_GROUP",
    "ApiCallLog",
    "FakeCloud",
    "FakeCloudClient",
    "FakeCloudConfig",
    "FakeCloudHandle",
    "Fault",
    "FaultPlan",
    "JobFault",
    "JobFaultPlan",
    "TrainingRun",
    "main",
    "start_fake_cloud",
    "training_instance_types",
]
