"""The trigger form's Params of a retrain DAG, from its spec.

Kept apart from the factory so the form's schema is one small thing to read and test: the UI's form and the
REST API refuse a value the schema refuses, and ``prepare_run`` checks the run's values again at start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_retrain.spec import PipelineSpec

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}
#: The Params the tasks read by name (``dag_factory`` wires these names into the operators).
FORCE_PARAM = "force"
DBT_SELECT_PARAM = "dbt_select"
# dbt's node selection syntax: names, globs, methods (``tag:``, ``path:``, ``source:``), graph operators
# (``+``, ``@``, ``1+``), ``,`` intersections, space-separated unions. No token may start with ``-``: the
# value becomes ``dbt build --select <tokens>``, where such a token would be read as a dbt option.
_SELECTOR_TOKEN = r"[A-Za-z0-9_.:/*+@,][A-Za-z0-9_.:/*+@,-]*"
DBT_SELECTOR_PATTERN = rf"^ *{_SELECTOR_TOKEN}( +{_SELECTOR_TOKEN})* *$"


def trigger_params(spec: PipelineSpec) -> dict[str, Any]:
    """The trigger form's Params: overrides of the spec's declared hyperparameters (each typed as declared,
    no other key), ``dry_run`` (train and gate, never promote), a free-text ``reason`` recorded in the
    promotion history, ``force`` (train even when the inputs equal the champion's) and ``dbt_select`` (this
    run's dbt selection instead of the spec's ``dbt.select``/``dbt.selector``). The UI's form and the REST API reject a value the schema refuses; ``prepare_run``
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
        FORCE_PARAM: Param(False, type="boolean", title="Force",
                           description="retrain even when nothing changed: data, code, hyperparameters and "
                                       "training config equal to what the champion was trained on"),
        DBT_SELECT_PARAM: Param(None, type=["null", "string"], minLength=1, maxLength=500,
                                pattern=DBT_SELECTOR_PATTERN, title="dbt selection override",
                                description="dbt selector(s) for this run's dbt build, instead of the spec's "
                                            f"({' '.join(spec.dbt.select) or spec.dbt.selector}); the spec's "
                                            "dbt.exclude still applies"),
    }


def dbt_selection(params: dict[str, Any] | None, name: str | None, select: list[str] | None,
                  selector: str | None) -> tuple[list[str] | None, str | None, str | None]:
    """The run's dbt selection: ``(select, selector, override)``. The Param ``name``, when set, replaces the
    spec's ``select`` and ``selector`` (``override`` is its value); otherwise they stand (``override`` None)."""
    value = (params or {}).get(name) if name else None
    if not isinstance(value, str) or not value.strip():
        return select, selector, None
    return value.split(), None, value.strip()
