"""What Vertex AI custom training accepts: machine types, accelerator types, and which go together.

Accelerator names come from ``google.cloud.aiplatform_v1``'s ``AcceleratorType`` enum (the API's own
vocabulary), not a hand-kept list. Machine types have no enum in the API; they are matched by family
pattern (``n1-standard-4``, ``a2-highgpu-1g`` ...) with the accelerators each family takes, following
Google's "Configure compute resources for custom training" page. Import-light: the spec validator, the
cost model and the fake cloud use it.

How many GPUs a machine takes is data too: GPUs attached to an N1 machine come in the counts of
:data:`ATTACHABLE_GPU_COUNTS` (1, 2 or 4 T4s; never 3), each count on machines up to a number of vCPUs;
A2/A3/G2 machine types have their GPUs built in (``a2-highgpu-1g`` exactly 1 A100).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


class UnknownMachineError(ValueError):
    pass


@dataclass(frozen=True)
class MachineFamily:
    pattern: str
    #: AcceleratorType names this family takes; empty: CPU only.
    accelerators: tuple[str, ...] = ()
    #: A2/A3/G2: the GPUs are part of the machine type and must be named with this count.
    fixed_count: bool = False


_CPU_SIZES = "(2|4|8|16|32|48|64|80|96|128|224)"
_FAMILIES: tuple[MachineFamily, ...] = (
    MachineFamily(
        rf"n1-(standard|highmem|highcpu)-{_CPU_SIZES}",
        ("NVIDIA_TESLA_T4", "NVIDIA_TESLA_P4", "NVIDIA_TESLA_P100", "NVIDIA_TESLA_V100", "NVIDIA_TESLA_K80"),
    ),
    MachineFamily(rf"(e2|n2|n2d|c2|c2d|m1)-(standard|highmem|highcpu|megamem|ultramem)-{_CPU_SIZES}"),
    MachineFamily(r"a2-highgpu-(1|2|4|8)g", ("NVIDIA_TESLA_A100",), fixed_count=True),
    MachineFamily(r"a2-megagpu-16g", ("NVIDIA_TESLA_A100",), fixed_count=True),
    MachineFamily(r"a2-ultragpu-(1|2|4|8)g", ("NVIDIA_A100_80GB",), fixed_count=True),
    MachineFamily(r"a3-highgpu-(1|2|4|8)g", ("NVIDIA_H100_80GB",), fixed_count=True),
    MachineFamily(r"a3-megagpu-8g", ("NVIDIA_H100_MEGA_80GB",), fixed_count=True),
    MachineFamily(r"a3-ultragpu-8g", ("NVIDIA_H200_141GB",), fixed_count=True),
    MachineFamily(r"g2-standard-(4|8|12|16|24|32|48|96)", ("NVIDIA_L4",), fixed_count=True),
)
_G2_GPUS = {4: 1, 8: 1, 12: 1, 16: 1, 24: 2, 32: 1, 48: 4, 96: 8}

#: GPUs attachable to N1 machines: accelerator -> {GPUs per machine: most vCPUs of a machine with that many}
#: (Compute Engine's N1 GPU table, which Vertex AI custom training follows; T4 comes 1, 2 or 4 per machine).
ATTACHABLE_GPU_COUNTS: dict[str, dict[int, int]] = {
    "NVIDIA_TESLA_T4": {1: 48, 2: 48, 4: 96},
    "NVIDIA_TESLA_P4": {1: 24, 2: 48, 4: 96},
    "NVIDIA_TESLA_P100": {1: 16, 2: 32, 4: 96},
    "NVIDIA_TESLA_V100": {1: 12, 2: 24, 4: 48, 8: 96},
    "NVIDIA_TESLA_K80": {1: 8, 2: 16, 4: 32, 8: 64},
}


@lru_cache(maxsize=1)
def accelerator_types() -> tuple[str, ...]:
    """Every ``AcceleratorType`` the installed aiplatform client knows (GPUs and TPUs), unspecified excluded."""
    from google.cloud.aiplatform_v1.types.accelerator_type import AcceleratorType

    return tuple(a.name for a in AcceleratorType if a.name != "ACCELERATOR_TYPE_UNSPECIFIED")


def machine_family(machine_type: str) -> MachineFamily:
    for family in _FAMILIES:
        if re.fullmatch(family.pattern, machine_type):
            return family
    raise UnknownMachineError(
        f"{machine_type!r} is not a Vertex AI training machine type (e.g. n1-standard-4, e2-standard-8, "
        "g2-standard-8, a2-highgpu-1g)"
    )


def fixed_accelerator_count(machine_type: str) -> int | None:
    """GPUs built into an A2/A3/G2 machine type; ``None`` for families with attachable GPUs."""
    family = machine_family(machine_type)
    if not family.fixed_count:
        return None
    if machine_type.startswith("g2-"):
        return _G2_GPUS[int(machine_type.rsplit("-", 1)[1])]
    match = re.search(r"-(\d+)g$", machine_type)
    return int(match.group(1)) if match else 8


def machine_problems(machine_type: str, accelerator_type: str | None, accelerator_count: int, field: str) -> list[str]:
    """Problems with a machine/accelerator combination, each naming ``field`` (``training.vertex``)."""
    try:
        family = machine_family(machine_type)
    except UnknownMachineError as e:
        return [f"{field}.machine_type: {e}"]
    problems: list[str] = []
    if accelerator_type:
        if accelerator_type not in accelerator_types():
            return [
                f"{field}.accelerator_type: {accelerator_type!r} is not a Vertex AI AcceleratorType "
                f"(known: {', '.join(accelerator_types())})"
            ]
        if accelerator_type not in family.accelerators:
            offered = ", ".join(family.accelerators) or "none (CPU only)"
            return [
                f"{field}.accelerator_type: {accelerator_type} is not offered with machine type {machine_type} "
                f"(offered: {offered})"
            ]
        if accelerator_count < 1:
            problems.append(f"{field}.accelerator_count: must be at least 1 with accelerator_type {accelerator_type}")
            return problems
        fixed = fixed_accelerator_count(machine_type)
        if fixed is not None and accelerator_count != fixed:
            problems.append(
                f"{field}.accelerator_count: {machine_type} comes with {fixed} x {accelerator_type}, not {accelerator_count}"
            )
        elif fixed is None and (problem := _attachable_count_problem(machine_type, accelerator_type, accelerator_count)):
            problems.append(f"{field}.accelerator_count: {problem}")
    elif family.fixed_count:
        problems.append(
            f"{field}.accelerator_type: {machine_type} comes with GPUs; set accelerator_type "
            f"{family.accelerators[0]} and accelerator_count {fixed_accelerator_count(machine_type)}"
        )
    elif accelerator_count:
        problems.append(f"{field}.accelerator_count: {accelerator_count} set without accelerator_type")
    return problems


def _attachable_count_problem(machine_type: str, accelerator_type: str, count: int) -> str | None:
    """Why ``count`` GPUs of ``accelerator_type`` cannot be attached to ``machine_type`` (None if they can)."""
    limits = ATTACHABLE_GPU_COUNTS.get(accelerator_type)
    if limits is None:
        return None  # an attachable type without a table row: the cloud decides
    if count not in limits:
        return (
            f"{count} x {accelerator_type} is not offered on {machine_type}; "
            f"choose {', '.join(str(n) for n in limits)} per machine"
        )
    vcpus = int(machine_type.rsplit("-", 1)[1])
    if vcpus > limits[count]:
        fits = [n for n, most in limits.items() if vcpus <= most]
        hint = f"use {', '.join(str(n) for n in fits)} GPUs" if fits else "use a smaller machine type"
        return (
            f"{machine_type} has {vcpus} vCPUs, more than {count} x {accelerator_type} allows ({limits[count]}); {hint}"
        )
    return None


def price_key(machine_type: str, accelerator_type: str | None, accelerator_count: int = 1) -> str:
    """The cost model's instance type (:mod:`airflow_retrain.cost`): one replica's machine and its GPUs.

    ``n1-standard-4+nvidia-tesla-t4`` for one attached GPU, ``n1-standard-4+4xnvidia-tesla-t4`` for four:
    the count is part of the key, so everything that prices or counts GPUs by instance type (runs, the
    budget check, the ledger, the sweep) sees it. A2/A3 machine types include their GPUs in the machine
    price; G2 and N1 add the accelerator (G2's count is fixed by the machine type, so never in the key).
    """
    if not accelerator_type or machine_type.startswith(("a2-", "a3-")):
        return machine_type
    accelerator = accelerator_type.lower().replace("_", "-")
    if accelerator_count > 1 and not machine_family(machine_type).fixed_count:
        return f"{machine_type}+{accelerator_count}x{accelerator}"
    return f"{machine_type}+{accelerator}"


_PRICE_KEY = re.compile(r"(?P<machine>[a-z0-9-]+)(?:\+(?:(?P<count>[1-9]\d*)x)?(?P<accelerator>[a-z0-9-]+))?")


def parse_price_key(key: str) -> tuple[str, str | None, int]:
    """``(machine type, accelerator price name or None, accelerators per replica)`` of a :func:`price_key`.

    :raises UnknownMachineError: when ``key`` is not one.
    """
    match = _PRICE_KEY.fullmatch(key)
    if match is None:
        raise UnknownMachineError(f"{key!r} is not a Vertex AI machine (+ accelerator) key")
    machine, accelerator = match["machine"], match["accelerator"]
    if accelerator is None:
        return machine, None, 0
    return machine, accelerator, int(match["count"] or 1)


def gpus_per_replica(key: str) -> int | None:
    """GPUs on one replica described by a :func:`price_key` (0 for CPU machines, None when unknown)."""
    try:
        machine, accelerator, count = parse_price_key(key)
        fixed = fixed_accelerator_count(machine)
    except UnknownMachineError:
        return None
    if fixed is not None:
        return fixed
    return count if accelerator and accelerator.startswith("nvidia-") else 0
