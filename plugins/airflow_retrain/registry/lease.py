"""The promotion lease: MLflow has no compare-and-set, so one writer at a time is arranged with a tag.

The registered-model tag ``retrain.lease`` holds ``{holder, nonce, expires_at, acquired_at}``. Taking it is
write, settle, re-read (verify-after-write): of two contenders writing at once, the one whose nonce is not
on the re-read lost. A holder verifies the lease again right before each write it protects and deletes it
when done; an expired lease counts as abandoned and is taken over; the same holder (a retry of the task
whose earlier attempt died holding it) takes it back at once.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from airflow_retrain.registry.errors import ConcurrentWrite, LeaseLost, LeaseUnavailable, RegistryError
from airflow_retrain.registry.tags import LEASE_TAG, MlflowHook


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Lease:
    """A held promotion lease; :meth:`verify` right before each write it protects."""

    hook: MlflowHook
    model_name: str
    holder: str
    nonce: str
    expires_at: float

    def verify(self) -> None:
        """Fail with :class:`LeaseLost` unless the registry still shows this lease, unexpired."""
        current = self.hook.read_lease(self.model_name)
        if not current or current.get("nonce") != self.nonce:
            raise LeaseLost(f"promotion lease of {self.model_name!r} was taken by "
                            f"{current.get('holder') if current else 'nobody (released)'}; nothing more written")
        if time.time() > self.expires_at:
            raise LeaseLost(f"promotion lease of {self.model_name!r} expired before the write; nothing more written")


def read(hook: MlflowHook, model_name: str) -> dict[str, Any] | None:
    """The lease record on ``model_name``, or ``None``; an unreadable tag reads as an expired lease."""
    raw = hook.model_tags(model_name).get(LEASE_TAG)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"holder": "unreadable", "nonce": raw, "expires_at": 0}


def acquire(hook: MlflowHook, model_name: str, holder: str, *, ttl_seconds: float = 300.0,
            wait_seconds: float = 120.0, settle_seconds: float = 0.5, poll_seconds: float = 0.25) -> Lease:
    """Take ``model_name``'s lease for ``holder`` (see the module docstring).

    :raises LeaseUnavailable: another holder kept it, or every race was lost, for ``wait_seconds``.
    """
    hook.ensure_registered_model(model_name)
    deadline = time.monotonic() + wait_seconds
    while True:
        current = hook.read_lease(model_name)
        now = time.time()
        if current and current.get("expires_at", 0) > now and current.get("holder") != holder:
            if time.monotonic() > deadline:
                raise LeaseUnavailable(
                    f"promotion lease of {model_name!r} is held by {current.get('holder')} until "
                    f"{time.strftime('%H:%M:%SZ', time.gmtime(current['expires_at']))}; waited {wait_seconds:.0f} s, "
                    "nothing changed"
                )
            time.sleep(poll_seconds * (0.5 + random.random()))
            continue
        if current and current.get("holder") == holder:
            hook.log.warning("Taking over the promotion lease of %r left by an earlier attempt of %s", model_name,
                             holder)
        elif current:
            hook.log.warning("Taking over the expired promotion lease of %r from %s", model_name,
                             current.get("holder"))
        nonce = uuid.uuid4().hex
        record = {"holder": holder, "nonce": nonce, "expires_at": now + ttl_seconds, "acquired_at": utc_now()}
        try:
            hook.call(f"write lease of {model_name!r}", _write, hook, model_name, json.dumps(record))
        except ConcurrentWrite:
            time.sleep(poll_seconds * random.random())  # a lost race, not an error: look again
            continue
        time.sleep(settle_seconds)
        check = hook.read_lease(model_name)
        if check and check.get("nonce") == nonce:
            hook.log.info("Holding the promotion lease of %r (%s)", model_name, holder)
            return Lease(hook, model_name, holder, nonce, record["expires_at"])
        if time.monotonic() > deadline:
            raise LeaseUnavailable(f"promotion lease of {model_name!r}: lost every race for {wait_seconds:.0f} s "
                                   f"(last holder {check.get('holder') if check else None}); nothing changed")


def _write(hook: MlflowHook, model_name: str, value: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        hook.client.set_registered_model_tag(model_name, LEASE_TAG, value)
    except MlflowException as e:
        text = str(e).lower()
        if "unique" in text or "duplicate" in text or "already exists" in text:
            raise ConcurrentWrite(str(e)) from None
        raise


def release(hook: MlflowHook, lease: Lease) -> None:
    """Delete the lease if it is still ``lease``; a failure only logs (the lease expires by itself)."""
    from mlflow.exceptions import MlflowException

    def delete() -> None:
        try:
            hook.client.delete_registered_model_tag(lease.model_name, LEASE_TAG)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise

    try:
        current = hook.read_lease(lease.model_name)
        if current and current.get("nonce") == lease.nonce:
            hook.call(f"release lease of {lease.model_name!r}", delete)
    except RegistryError as e:  # the task's own error matters more
        hook.log.warning("Could not release the promotion lease of %r (it expires by itself): %s",
                         lease.model_name, e)
