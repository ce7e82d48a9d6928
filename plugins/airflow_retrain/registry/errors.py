"""How registry operations fail; every message names the operation and the cause, without secrets."""


class RegistryError(RuntimeError):
    """A registry operation failed; the message names the operation and the cause (without secrets)."""


class LeaseUnavailable(RegistryError):
    """Another run holds the model's promotion lease and did not release it in time."""


class LeaseLost(RegistryError):
    """The lease was taken over (it expired or was overwritten) before the write it protects."""


class AliasMoved(LeaseLost):
    """The alias is not where the decision found it: decide again under a fresh lease."""


class ConcurrentWrite(Exception):  # noqa: N818 - a signal between the hook and the lease, never escapes
    """Two writers hit the same registry tag at once (the server's upsert lost a race on its unique key)."""
