"""The trigger form's Params of a retrain DAG, from its spec.

Kept apart from the factory so the form's schema is one small thing to read and test: the UI's form and the
REST API refuse a value the schema refuses, and ``prepare_run`` checks the run's values again at start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_retrain.spec import PipelineSpec

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def trigger_params(spec: PipelineSpec) -> dict[str, Any]:
    """The trigger form's Params: overrides of the spec's declared hyperparameters (each typed as declared,
    no other key), ``dry_run`` (train and gate, never promote) and a free-text ``reason`` recorded in the
    promotion history. The UI's form and the REST API reject a value the schema refuses; ``prepare_run``
    checks again when the run starts."""
    from airflow.sdk import Param

    declared = spec.training.hyperparameters
    return {
        "hyperparameters": Param(
            {}, type="object", additionalProperties=False,
            properties={k: {"type": _JSON_TYPES[type(v)]} for k, v in declared.items()},
            title="Hyperparameter overrides",
            description="JSON object; keys among the spec's training.hyperparameters: " + ", ".join(
                f"{k} ({_JSON_TYPES[type(v)]}, spec: {v})" for k, v in declared.items()),
        ),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="train and gate a candidate, never move the champion"),
        # Nullable: the UI's form flags an empty non-null string as missing.
        "reason": Param(None, type=["null", "string"], maxLength=500, title="Reason",
                        description="why this run (recorded in the promotion history)"),
    }
