"""Field types and value rules shared by the spec's models: what text may travel into a subprocess, bucket
and object-prefix names, image references, environment names, artifact roots and schedules.

Pure functions over values (each returns the problem, or raises ``ValueError`` naming it, for a pydantic
validator to report); nothing here reads a file or imports from ``airflow_retrain``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

NAME_RE = r"^[a-z][a-z0-9_]{0,62}$"

# Numbers in a spec are real numbers: ``true`` is not 1, ``.nan``/``.inf`` are not prices or margins.
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
# Airflow connection and pool ids: what its UI and CLI accept.
AIRFLOW_ID_RE = r"^[A-Za-z0-9_.-]{1,250}$"
# Hyperparameter keys become ``--key`` arguments and ``SM_HP_<KEY>`` variables.
IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
_CONTROL_CHARS_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TEMPLATE_MARKERS = ("{{", "{%", "{#")
#: Airflow's limit on a DAG tag (``airflow.models.dag.TAG_MAX_LEN``).
TAG_MAX_LENGTH = 100
#: The schedule presets Airflow accepts besides cron expressions and ``null``.
SCHEDULE_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
#: Hyperparameters the DAG sets itself from the spec (``dataset.*``, ``resources.gpu``).
RESERVED_HYPERPARAMETERS = ("target_column", "id_column", "device")
# Names the training environment never takes from the worker: Airflow's own (connections, config,
# secrets) and the container contract the backend writes itself.
_FORBIDDEN_ENV_PREFIXES = ("AIRFLOW", "_AIRFLOW", "SM_")


def unsafe_text(value: str) -> str | None:
    """Why ``value`` cannot travel into a subprocess argument or environment (None if it can)."""
    if "\x00" in value:
        return "contains a NUL byte"
    if _CONTROL_CHARS_RE.search(value):
        return "contains a control character"
    if any(marker in value for marker in _TEMPLATE_MARKERS):
        return "contains a Jinja template marker ({{, {% or {#), which Airflow would render at run time"
    return None


_S3_BUCKET_CHARS = re.compile(r"^[a-z0-9.-]+$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
# Prefixes and suffixes S3 reserves (access points, Object Lambda, directory and table buckets, MRAPs).
_S3_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_S3_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", "--table-s3", ".mrap")


def s3_bucket_problem(name: str) -> str | None:
    """Why ``name`` is not a general-purpose S3 bucket name by S3's naming rules (None if it is one)."""
    if not 3 <= len(name) <= 63:
        return f"S3 bucket name {name!r} must be 3 to 63 characters long, not {len(name)}"
    if not _S3_BUCKET_CHARS.match(name):
        return f"S3 bucket name {name!r} may contain only lowercase letters, digits, hyphens (-) and dots (.)"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return f"S3 bucket name {name!r} must begin and end with a letter or digit"
    if ".." in name:
        return f"S3 bucket name {name!r} must not contain two adjacent dots"
    if _IPV4.match(name):
        return f"S3 bucket name {name!r} must not be formatted as an IP address"
    if name.startswith(_S3_RESERVED_PREFIXES):
        return f"S3 bucket name {name!r} must not start with a reserved prefix ({', '.join(_S3_RESERVED_PREFIXES)})"
    if name.endswith(_S3_RESERVED_SUFFIXES):
        return f"S3 bucket name {name!r} must not end with a reserved suffix ({', '.join(_S3_RESERVED_SUFFIXES)})"
    return None


_GCS_BUCKET_CHARS = re.compile(r"^[a-z0-9._-]+$")


def gcs_bucket_problem(name: str) -> str | None:
    """Why ``name`` is not a Cloud Storage bucket name by GCS's naming rules (None if it is one)."""
    longest = 222 if "." in name else 63
    if not 3 <= len(name) <= longest:
        return f"GCS bucket name {name!r} must be 3 to {longest} characters long, not {len(name)}"
    if not _GCS_BUCKET_CHARS.match(name):
        return f"GCS bucket name {name!r} may contain only lowercase letters, digits, -, _ and ."
    if not (name[0].isalnum() and name[-1].isalnum()):
        return f"GCS bucket name {name!r} must begin and end with a letter or digit"
    if any(not 1 <= len(part) <= 63 for part in name.split(".")):
        return f"GCS bucket name {name!r}: each dot-separated part must be 1 to 63 characters"
    if _IPV4.match(name):
        return f"GCS bucket name {name!r} must not be formatted as an IP address"
    if name.startswith("goog") or "google" in name or "g00gle" in name:
        return f"GCS bucket name {name!r} must not begin with 'goog' or contain 'google'"
    return None


# Object key prefixes under a bucket: S3's "safe characters" (also safe in GCS object names), in segments.
_KEY_PREFIX_RE = re.compile(r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*/?$")


def key_prefix_problem(value: str) -> str | None:
    if len(value) > 512:
        return f"at most 512 characters, not {len(value)}"
    if not _KEY_PREFIX_RE.match(value):
        return (
            f"{value!r} is not an object key prefix: segments of letters, digits and !_.*'()- joined by '/', "
            "with no leading '/', no empty segment and no spaces"
        )
    if any(part in (".", "..") for part in value.split("/")):
        return f"{value!r} has a '.' or '..' segment"
    return None



class StrictModel(BaseModel):
    """A spec block: unknown fields are errors, and a loaded spec never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# A container image reference: registry/path[:tag][@sha256:digest], no spaces or control characters.
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._:/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")


def check_image(value: str | None) -> str | None:
    if value is not None and (len(value) > 1024 or not _IMAGE_RE.match(value)):
        raise ValueError(
            f"{value!r} is not a container image reference (registry/repository[:tag][@sha256:digest], lowercase "
            "repository, no spaces)"
        )
    return value



def check_env_name(name: str) -> None:
    if not _ENV_NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a valid environment variable name")
    if name.upper().startswith(_FORBIDDEN_ENV_PREFIXES):
        raise ValueError(
            f"{name!r}: Airflow's variables (connections, config, secrets) and the SM_* container contract "
            "never reach the training script"
        )


ARTIFACT_SCHEMES = ("file", "s3", "gs", "gcs")


def artifact_root_problems(root: str) -> list[str]:
    """What is wrong with an artifact root URI (empty when it is usable)."""
    parts = urlsplit(root)
    if parts.scheme not in ARTIFACT_SCHEMES:
        return [f"{root!r} must be a URI with one of the schemes {', '.join(s + '://' for s in ARTIFACT_SCHEMES)}"]
    if "@" in parts.netloc:
        return [f"{root!r}: name the connection in connection_id, not in the URI"]
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            return [f"{root!r}: a file:// root needs an absolute path (file:///srv/artifacts)"]
    elif not parts.netloc:
        return [f"{root!r}: no bucket"]
    elif parts.scheme == "s3" and (problem := s3_bucket_problem(parts.netloc)):
        return [f"{root!r}: {problem}"]
    elif parts.scheme in ("gs", "gcs") and (problem := gcs_bucket_problem(parts.netloc)):
        return [f"{root!r}: {problem}"]
    if parts.query or parts.fragment:
        return [f"{root!r}: no query or fragment allowed"]
    return []



def validate_schedule(schedule: str, *, start: datetime | None = None) -> str:
    """Check a spec's schedule as the DAG will: a preset or a 5-field cron expression that fires.

    :raises ValueError: naming what is wrong (syntax, a field out of range, a date that never comes).
    """
    from croniter import CroniterBadCronError, CroniterBadDateError, croniter

    if schedule.startswith("@"):
        if schedule not in SCHEDULE_PRESETS:
            raise ValueError(f"unknown preset {schedule!r}; presets: {', '.join(SCHEDULE_PRESETS)}")
        return schedule
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(
            f"{schedule!r} is not a cron expression of 5 fields (minute hour day-of-month month day-of-week) "
            f"nor a preset ({', '.join(SCHEDULE_PRESETS)})"
        )
    try:
        croniter(schedule, start or datetime(2026, 1, 1), max_years_between_matches=10).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"cron expression {schedule!r} never fires (no such date within 10 years)") from None
    except (CroniterBadCronError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"invalid cron expression {schedule!r}: {e}") from None
    return schedule

