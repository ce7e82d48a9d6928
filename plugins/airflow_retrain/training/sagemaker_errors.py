"""How the SageMaker backend bounds its AWS calls and words the cloud's errors.

Every SageMaker and CloudWatch client is bounded (:func:`bounded_botocore_config`, docs/outages.md):
botocore's ``standard`` retries, at most :data:`MAX_ATTEMPTS` attempts of :data:`CONNECT_TIMEOUT_SECONDS`
to connect and :data:`READ_TIMEOUT_SECONDS` to answer, so a call to an unreachable or silent AWS fails
within :data:`CALL_BOUND_SECONDS`; the connection's extra ``config_kwargs`` overrides any of them.

:func:`cloud_errors` re-raises boto's (and s3fs's) errors as one message: quota, throttling, a failing or
unreachable cloud as :class:`SageMakerCloudError` (the task retries); every other refusal as
:class:`~airflow_retrain.training.base.TrainingInputError` naming the spec field from :data:`ERROR_RULES`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from airflow_retrain.training.base import TrainingInputError, TrainingJobRequest
from airflow_retrain.training.remote import ErrorRule

#: Seconds botocore waits to open a connection to AWS, per attempt.
CONNECT_TIMEOUT_SECONDS = 5
#: Seconds botocore waits for an answer on an open connection (per socket read), per attempt.
READ_TIMEOUT_SECONDS = 20
#: Attempts per call (the first one included) in botocore's ``standard`` retry mode.
MAX_ATTEMPTS = 3
#: The longest one call can take against an unreachable or silent AWS: every attempt times out, plus
#: ``standard`` mode's backoff (at most 1 s, then 2 s, between attempts).
CALL_BOUND_SECONDS = MAX_ATTEMPTS * (CONNECT_TIMEOUT_SECONDS + READ_TIMEOUT_SECONDS) + (2 ** (MAX_ATTEMPTS - 1) - 1)

#: Error codes worth a retry of the task: the cloud, not the request, is at fault.
_THROTTLED = ("ThrottlingException", "Throttling", "SlowDown", "TooManyRequestsException")
_TRANSIENT = ("InternalServer", "ServiceUnavailable", "InternalFailure", "5")

#: A refusal's ``"<Code>: <Message>"`` -> the spec field to fix, first match wins. Hints are formatted with
#: ``conn`` (the connection, quoted), ``role_arn`` and ``bucket``.
ERROR_RULES: tuple[ErrorRule, ...] = (
    ErrorRule(r"^(AccessDenied|UnrecognizedClient|InvalidClientTokenId|ExpiredToken)",
              "training.sagemaker.role_arn",
              "access denied: check the credentials of Airflow connection {conn} and the permissions of {role_arn}"),
    ErrorRule(r"^NoSuchBucket|bucket .*does not exist", "training.sagemaker.bucket", "bucket {bucket!r}"),
    ErrorRule(r"role", "training.sagemaker.role_arn"),
    ErrorRule(r"instance ?type", "training.resources.instance_type"),
    ErrorRule(r"instancecount", "training.resources.instance_count"),
    ErrorRule(r"image", "training.sagemaker.image"),
    ErrorRule(r"subnet", "training.sagemaker.subnets"),
    ErrorRule(r"securitygroup", "training.sagemaker.security_group_ids"),
    ErrorRule(r"kms", "training.sagemaker.kms_key_id"),
    ErrorRule(r"volume", "training.sagemaker.volume_size_gb"),
    ErrorRule(r"maxruntime", "training.resources.max_runtime_seconds"),
    ErrorRule(r"hyperparameter", "training.hyperparameters"),
    ErrorRule(r"s3", "training.sagemaker.bucket"),
    ErrorRule(r"", "the training request", "through Airflow connection {conn}"),
)


class SageMakerCloudError(RuntimeError):
    """The cloud failed a call for a reason that may pass (quota, throttling, network): retry the task."""


def bounded_botocore_config(hook: Any, *, max_attempts: int = MAX_ATTEMPTS, retry_mode: str = "standard") -> Any:
    """The botocore ``Config`` for a client of ``hook``'s connection: bounded timeouts and retries.

    Built from this module's bounds, then merged with the connection's own botocore config (its extra
    ``config_kwargs``, as the Amazon provider reads it: :attr:`AwsBaseHook.config`), so an operator can
    lengthen or shorten any of them per connection without touching the package.
    """
    from botocore.config import Config

    defaults = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        # total_max_attempts counts the first attempt; botocore's max_attempts would count only retries.
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
    )
    return defaults.merge(hook.config)


def timeouts_text(config: Any) -> str:
    """How a client with ``config`` gives up, for error messages."""
    retries = getattr(config, "retries", None) or {}
    attempts = retries.get("total_max_attempts")
    if attempts is None and "max_attempts" in retries:  # botocore's older key: retries after the first
        attempts = retries["max_attempts"] + 1
    return (
        f"{attempts or 'botocore default'} attempts ({config.connect_timeout} s to connect and "
        f"{config.read_timeout} s to answer, each)"
    )



@contextmanager
def cloud_errors(backend: Any, action: str, job_name: str | None = None, request: TrainingJobRequest | None = None):
    """Turn boto (and s3fs) errors of ``backend``'s calls into one message naming what to fix."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        HTTPClientError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    unreachable = (EndpointConnectionError, BotoConnectionError, HTTPClientError)
    what = f"{action}" + (f" (training job {job_name})" if job_name else "")
    conn = f"Airflow connection {backend.connection_id!r}"
    try:
        yield
    except unreachable as e:  # first: botocore's timeouts are OSErrors too
        raise _unreachable(backend, what, conn, e) from None
    except (ClientError, OSError) as e:
        # s3fs raises OSError subclasses and keeps botocore's error as the cause.
        cause = e if isinstance(e, ClientError) else e.__cause__
        if isinstance(cause, unreachable):
            raise _unreachable(backend, what, conn, cause) from None
        if not isinstance(cause, ClientError):
            raise
        raise _refusal(backend, what, cause, request) from None
    except (NoCredentialsError, NoRegionError) as e:
        raise TrainingInputError(f"{what}: {e}; set them in {conn}") from None
    except ParamValidationError as e:
        raise TrainingInputError(f"{what}: the request is invalid: {e}") from None


def _unreachable(backend: Any, what: str, conn: str, error: Exception) -> SageMakerCloudError:
    # Refused, unreachable, or silent (read timeout, connection closed): after every attempt.
    return SageMakerCloudError(
        f"{what}: cannot reach AWS after {timeouts_text(backend.client_config)} ({error}); check {conn} "
        f"(region {backend.region}, extra endpoint_url)"
    )


def _refusal(backend: Any, what: str, error: Any, request: TrainingJobRequest | None) -> Exception:
    err = error.response.get("Error", {})
    code, message = str(err.get("Code", "")), str(err.get("Message", error))
    quoted = f"{code}: {message}"
    if code == "ResourceLimitExceeded":
        itype = request.instance_type if request else "the instance type"
        count = request.instance_count if request else "?"
        return SageMakerCloudError(
            f"{what}: the account's quota for {itype} x{count} is used up ({quoted}); lower "
            f"training.resources.instance_count/instance_type, raise the quota, or queue retrains "
            f"with training.pool"
        )
    if code in _THROTTLED:
        return SageMakerCloudError(f"{what}: still throttled after {timeouts_text(backend.client_config)} ({quoted})")
    if code.startswith(_TRANSIENT):
        return SageMakerCloudError(f"{what}: the cloud failed ({quoted})")
    rule = backend.error_rule(quoted)
    field = rule.field if rule else backend.default_error_field
    hint = rule.hint.format(conn=repr(backend.connection_id), role_arn=backend.role_arn, bucket=backend.bucket) if rule else ""
    return TrainingInputError(f"{what}: {field}: {quoted}" + (f" ({hint})" if hint else ""))
