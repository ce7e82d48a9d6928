"""Identity of one pipeline run: its key, scratch folder, job names and tags.

Everything is derived deterministically from ``(dag_id, run_id)``, so any task of the run (a retry, the
teardown, a later sweep) finds the same folder and the same jobs without passing state around.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from airflow_retrain.config import state_dir

TAG_PREFIX = "retrain"
DEFAULT_TTL_SECONDS = 6 * 3600
SCRATCH_ENV = "RETRAIN_SCRATCH"


_LABEL_BAD = re.compile(r"[^a-z0-9_-]")


def label_key(tag_key: str) -> str:
    """A tag key in the portable label form every cloud accepts (Vertex/GCP labels are the strictest:
    lowercase letters, digits, ``_`` and ``-``, starting with a letter, at most 63 characters):
    ``retrain:dag-id`` -> ``retrain_dag-id``."""
    key = _LABEL_BAD.sub("_", tag_key.lower().replace(":", "_"))[:63]
    return key if key[:1].isalpha() else f"k{key}"[:63]


def label_value(value: str) -> str:
    """A tag value in label form (lowercase, ``[a-z0-9_-]``, at most 63 characters; may be empty)."""
    return _LABEL_BAD.sub("-", str(value).lower())[:63]


def to_labels(tags: dict[str, str]) -> dict[str, str]:
    """The portable label form of :meth:`RunIdentity.job_tags` (and of any tag filter): backends whose
    cloud refuses ``retrain:*`` keys (Vertex AI) store and match these, the teardown sweep included."""
    return {label_key(k): label_value(v) for k, v in tags.items()}


def from_labels(labels: dict[str, str]) -> dict[str, str]:
    """Labels back in tag form (``retrain_dag-id`` -> ``retrain:dag-id``); values stay in label form."""
    prefix = f"{TAG_PREFIX}_"
    return {(f"{TAG_PREFIX}:{k[len(prefix):]}" if k.startswith(prefix) else k): v for k, v in labels.items()}


@dataclass(frozen=True)
class RunIdentity:
    pipeline: str
    dag_id: str
    run_id: str
    owner: str = "airflow"

    @property
    def run_key(self) -> str:
        return hashlib.sha256(f"{self.dag_id}\x00{self.run_id}".encode()).hexdigest()[:12]

    def scratch_dir(self, root: Path | str | None = None) -> Path:
        """This worker's local scratch for the run (``RETRAIN_SCRATCH`` or ``<state dir>/runs``).

        Only the task that writes here reads it: hand-offs between tasks go through the artifact store.
        """
        base = Path(env) if (env := os.environ.get(SCRATCH_ENV)) else state_dir(root) / "runs"
        return base / self.dag_id / self.run_key

    def job_name(self, attempt: int) -> str:
        """``<pipeline>-<run key>-<attempt>``: valid on SageMaker and Vertex (<= 63, [a-z0-9-])."""
        base = re.sub(r"[^a-z0-9-]", "-", self.pipeline.lower())[:40].strip("-") or "job"
        return f"{base}-{self.run_key}-{attempt}"

    def job_tags(self, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> dict[str, str]:
        """Tags on everything the run launches; teardown and the sweep find resources by them."""
        return {
            f"{TAG_PREFIX}:pipeline": self.pipeline,
            f"{TAG_PREFIX}:dag-id": self.dag_id,
            f"{TAG_PREFIX}:run-key": self.run_key,
            f"{TAG_PREFIX}:owner": self.owner,
            f"{TAG_PREFIX}:expires-at": str(int(time.time()) + ttl_seconds),
        }

    def labels(self, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> dict[str, str]:
        """:meth:`job_tags` in the portable label form (:func:`to_labels`)."""
        return to_labels(self.job_tags(ttl_seconds))

    def run_tags(self) -> dict[str, str]:
        """The subset of :meth:`job_tags` that identifies the run (stable across calls)."""
        return {f"{TAG_PREFIX}:dag-id": self.dag_id, f"{TAG_PREFIX}:run-key": self.run_key}

    @classmethod
    def from_context(cls, context, pipeline: str) -> RunIdentity:
        dag = context["dag"]
        return cls(
            pipeline=pipeline,
            dag_id=dag.dag_id,
            run_id=context["run_id"],
            owner=str(getattr(context["task"], "owner", "airflow")),
        )
