"""The inventory interface every resource kind is swept through, and the records a sweep produces.

An :class:`Inventory` covers one place (an AWS account and region, this machine, later a Vertex AI
project and location) and one or more resource kinds. It lists what runs and bills there with its tags,
judges each resource (:class:`Finding`: idle or not, why, with evidence), writes and clears the sweep's
mark, re-reads one resource right before acting, and acts. The sweep (:mod:`.sweep`) owns the order and
the safety rules; inventories only talk to their service.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

Clock = Callable[[], float]


class ResourceGone(LookupError):
    """The resource disappeared (deleted, or finished) between listing and acting."""


@dataclass
class Resource:
    """A billable resource as the inventory saw it.

    :param kind: e.g. ``sagemaker.endpoint`` (see :data:`airflow_retrain.teardown.KIND_ACTIONS`).
    :param location: the account/region (``aws_default/us-east-1``) or ``local``.
    :param started_at: epoch seconds since when it bills (uptime and cost are counted from here).
    :param backend: the price-table backend (``sagemaker``, ``local``, ``vertex``).
    """

    kind: str
    name: str
    location: str
    state: str
    tags: dict[str, str] = field(default_factory=dict)
    started_at: float | None = None
    backend: str = "local"
    instance_type: str | None = None
    instance_count: int = 1
    arn: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.location}:{self.name}"

    def uptime(self, now: float) -> float:
        return max(0.0, now - self.started_at) if self.started_at else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Finding:
    """Whether a resource is idle (a candidate for its kind's action), why, and the evidence."""

    idle: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Mark:
    """The sweep's mark on a resource: the planned action and when it was planned."""

    action: str
    planned_at: float

    def encode(self) -> str:
        return f"{self.action}@{int(self.planned_at)}"

    @classmethod
    def decode(cls, value: str | None) -> Mark | None:
        if not value or "@" not in value:
            return None
        action, _, when = value.rpartition("@")
        try:
            return cls(action, float(when))
        except ValueError:
            return None


def ttl_expired(tags: dict[str, str], ttl_tag: str, now: float) -> tuple[bool, dict[str, Any]]:
    """Whether the TTL tag (epoch seconds) has passed; an unreadable TTL counts as no TTL."""
    raw = tags.get(ttl_tag)
    if raw is None:
        return False, {}
    try:
        expires = float(raw)
    except ValueError:
        return False, {"ttl_unreadable": raw}
    return now >= expires, {"expires_at": expires, "seconds_past_ttl": round(now - expires, 1)}


class Inventory(ABC):
    """Resources of some kinds in one place.

    :param policy: the validated :class:`~airflow_retrain.teardown.policy.TeardownPolicy`.
    :param clock: epoch seconds now (injectable so tests can move time past a grace period).
    """

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]

    def __init__(self, policy: Any, clock: Clock | None = None) -> None:
        self.policy = policy
        self.clock = clock or time.time
        self.api_calls = 0

    @property
    @abstractmethod
    def location(self) -> str:
        """Where this inventory looks, for records and logs (no credentials)."""

    @abstractmethod
    def resources(self) -> Iterable[Resource]:
        """Every running, billable resource of the enabled kinds, with its tags."""

    @abstractmethod
    def assess(self, resources: list[Resource], refreshed: bool = False) -> dict[str, Finding]:
        """A finding per resource key (batched where the service allows, e.g. one metrics query).

        :param refreshed: the resources were just read by :meth:`refresh`; do not describe them again.
        """

    @abstractmethod
    def refresh(self, resource: Resource) -> Resource:
        """Read the resource again (state and tags); raise :class:`ResourceGone` when it no longer runs."""

    @abstractmethod
    def set_tag(self, resource: Resource, key: str, value: str) -> None:
        """Set (replace) one tag on the resource."""

    @abstractmethod
    def remove_tag(self, resource: Resource, key: str) -> None:
        """Remove one tag from the resource."""

    @abstractmethod
    def act(self, resource: Resource, action: str) -> str:
        """Do ``action`` (stop, delete, kill); return what was done. Raise :class:`ResourceGone` if gone."""

    @classmethod
    def from_policy(cls, policy: Any, clock: Clock | None = None) -> list[Inventory]:
        """One inventory per place the policy configures for this class (none when not configured)."""
        return [cls(policy, clock)]
