"""Names, defaults and run-time knobs of the fake cloud."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5599
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCESS_KEY = "testing"
CONTROL_PREFIX = "/fake-cloud"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
INTERNAL_HEADER = "x-fake-cloud-internal"
# What a training script may inherit from the machine that runs the fake: nothing with a secret in it.
ALLOWED_HOST_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
)

_ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::(\d{12}):role/?([a-zA-Z_0-9+=,.@\-_/]+)$")


@dataclasses.dataclass
class FakeCloudConfig:
    """Run-time knobs of the fake (``GET``/``POST /fake-cloud/config``; env ``FAKE_CLOUD_<NAME>``).

    :param min_training_seconds: a job stays in ``Training`` at least this long (billed), even when
        its script ends sooner: jobs that "train for a set time" for benchmarks and timing tests.
    :param starting_seconds: time spent in ``Starting`` before downloading (instance provisioning).
    :param stop_grace_seconds: after SIGTERM, how long the script may take before its process tree
        is killed (SageMaker gives 120 s).
    :param spot_billable_fraction: ``BillableTimeInSeconds`` / ``TrainingTimeInSeconds`` for jobs
        with ``EnableManagedSpotTraining`` (0.3 = 70 % spot savings).
    :param validate_role: reject ``RoleArn`` values that are not roles in the fake IAM.
    :param python: interpreter that runs the training program (default: the fake's own).
    :param keep_job_dirs: keep each job's container root under the state dir after it ends.
    """

    min_training_seconds: float = 0.0
    starting_seconds: float = 0.0
    stop_grace_seconds: float = 5.0
    spot_billable_fraction: float = 0.3
    validate_role: bool = True
    python: str = sys.executable
    keep_job_dirs: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> FakeCloudConfig:
        environ = os.environ if environ is None else environ
        config = cls()
        config.update(
            {
                f.name: environ[f"FAKE_CLOUD_{f.name.upper()}"]
                for f in dataclasses.fields(cls)
                if f"FAKE_CLOUD_{f.name.upper()}" in environ
            }
        )
        return config

    def update(self, values: dict[str, Any]) -> None:
        """Set knobs from JSON or strings; unknown names and bad values raise ``ValueError``."""
        types = {f.name: f.type for f in dataclasses.fields(self)}
        for name, value in values.items():
            if name not in types:
                raise ValueError(f"unknown fake-cloud setting {name!r}; known: {', '.join(sorted(types))}")
            kind = types[name]
            if kind == "bool":
                parsed: Any = (
                    value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")
                )
            elif kind == "float":
                parsed = float(value)
                if not math.isfinite(parsed) or parsed < 0:
                    raise ValueError(f"fake-cloud setting {name} must be a finite number >= 0, got {value!r}")
            else:
                parsed = str(value)
            setattr(self, name, parsed)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
