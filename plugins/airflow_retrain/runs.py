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

from airflow_retrain.spec import state_dir

TAG_PREFIX = "retrain"
DEFAULT_TTL_SECONDS = 6 * 3600
SCRATCH_ENV = "RETRAIN_SCRATCH"


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
