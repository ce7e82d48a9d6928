"""The promotion history: append-only registered-model tags ``retrain.history.<seq>`` (JSON).

Every alias move and every promotion decision is one entry: from, to, who, why, when. Entries are written
only under the model's promotion lease (:mod:`.lease`), so two writers never pick the same ``seq``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow_retrain.registry.errors import AliasMoved
from airflow_retrain.registry.lease import utc_now
from airflow_retrain.registry.tags import HISTORY_TAG, MlflowHook

if TYPE_CHECKING:
    from airflow_retrain.registry.lease import Lease


def read(hook: MlflowHook, model_name: str) -> list[dict[str, Any]]:
    """Every recorded alias move and promotion decision of ``model_name``, oldest first (from MLflow alone)."""
    entries = []
    for key, value in hook.model_tags(model_name).items():
        if key.startswith(f"{HISTORY_TAG}."):
            try:
                entries.append(json.loads(value))
            except ValueError:
                entries.append({"seq": int(key.rsplit(".", 1)[1]), "unreadable": value})
    return sorted(entries, key=lambda e: int(e["seq"]))


def append(hook: MlflowHook, lease: Lease, entry: dict[str, Any]) -> dict[str, Any]:
    """Append ``entry``; only the lease holder writes, so ``seq`` is never taken twice."""
    lease.verify()
    tags = hook.model_tags(lease.model_name)
    seqs = [int(k.rsplit(".", 1)[1]) for k in tags if k.startswith(f"{HISTORY_TAG}.")]
    seq = max(seqs, default=0) + 1
    record = {"seq": seq, "at": utc_now(), **entry}
    hook.call(f"append history #{seq} of {lease.model_name!r}", hook.client.set_registered_model_tag,
              lease.model_name, f"{HISTORY_TAG}.{seq:06d}", json.dumps(record, default=str, sort_keys=True))
    return record


def move_alias(hook: MlflowHook, lease: Lease, alias: str, version: str, entry: dict[str, Any],
               expected_from: str | None | object = ...) -> dict[str, Any]:
    """Move ``alias`` to ``version`` and record it; under the lease.

    :param expected_from: the version the decision was made against (``None``: no alias yet); when the
        alias points elsewhere now, nothing is written and :class:`AliasMoved` is raised.
    """
    current = hook.get_version_by_alias(lease.model_name, alias)
    before = str(current.version) if current is not None else None
    if expected_from is not ... and before != expected_from:
        raise AliasMoved(f"{lease.model_name}@{alias} moved from v{expected_from} to v{before} since the decision; "
                         "nothing written")
    record = {"alias": alias, "from": before, "to": str(version), **entry}
    lease.verify()
    hook.set_alias(lease.model_name, alias, version)
    return hook.append_history(lease, record)
