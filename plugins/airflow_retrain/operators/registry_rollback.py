"""Point ``champion`` back at the previous champion or at a named version that once passed its gates."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_retrain.hooks.mlflow import LeaseUnavailable, RegistryError
from airflow_retrain.links.mlflow import MlflowChampionVersionLink
from airflow_retrain.operators.registry_base import RegistryBaseOperator
from airflow_retrain.registry.tags import CHAMPION, GATE_OUTCOME_TAG, GATE_TAG


class RollbackModelOperator(RegistryBaseOperator):
    """Point ``champion`` back at the previous champion (from the history) or at a named version.

    A named version must once have passed its gates (``retrain.gate_outcome`` = ``passed``, or every
    ``retrain.gate.*`` tag ``passed``). The move happens under the promotion lease, in one alias write,
    and is appended to the history with the reason.

    :param model_name: registered model name.
    :param version: version to restore; ``None``/empty for the champion before the current one.
    :param reason: why (recorded in the history).
    """

    template_fields = ("model_name", "version", "reason")
    operator_extra_links = (MlflowChampionVersionLink(),)
    ui_color = "#ffb3b3"

    def __init__(self, *, model_name: str, version: str | int | None = None, reason: str = "", alias: str = CHAMPION,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.version = version
        self.reason = reason
        self.alias = alias

    def execute(self, context) -> dict[str, Any]:
        try:
            return self._execute(context)
        except LeaseUnavailable as e:
            raise AirflowFailException(str(e)) from None
        except RegistryError as e:
            raise RuntimeError(str(e)) from None

    def _execute(self, context) -> dict[str, Any]:
        run = self.run_identity(context)
        holder = f"{run.dag_id}/{run.run_id}/{self.task_id}"
        name = self.model_name
        reason = (self.reason or "").strip() or "no reason given"
        if self.hook.find_registered_model(name) is None:
            self._fail(f"registered model {name!r} does not exist: nothing to roll back")
        with self._lease(name, holder) as lease:
            current = self.hook.get_version_by_alias(name, self.alias)
            before = str(current.version) if current is not None else None
            wanted = str(self.version).strip() if self.version not in (None, "") else None
            if wanted is None:
                wanted = self._previous_champion(name, before)
            elif not wanted.isdigit():
                self._fail(f"version must be a version number, not {wanted!r}")
            try:
                mv = self.hook.get_version(name, wanted)
            except RegistryError as e:
                self._fail(f"{name} v{wanted} cannot be restored: {e}")
            tags = mv.tags or {}
            gate_tags = {k: v for k, v in tags.items() if k.startswith(f"{GATE_TAG}.") and k.count(".") == 2}
            passed = tags.get(GATE_OUTCOME_TAG) == "passed" or (gate_tags and all(v == "passed" for v in gate_tags.values()))
            if not passed:
                self._fail(f"{name} v{wanted} never passed its gates ({gate_tags or 'no gate tags'}): it cannot become "
                           f"{self.alias}; nothing changed")
            if wanted == before:
                self._fail(f"{name} v{wanted} is already {self.alias}; nothing changed")
            entry = self.hook.move_alias(lease, self.alias, wanted, {"action": "rollback", "by": holder,
                                                                   "reason": reason}, expected_from=before)
        MlflowChampionVersionLink.persist(context, self.hook.version_url(name, wanted))
        self.log.info("Rolled %s@%s back from v%s to v%s: %s (history #%s)", name, self.alias, before, wanted,
                      reason, entry["seq"])
        return {"model_name": name, "alias": self.alias, "from": before, "to": wanted, "reason": reason,
                "history_seq": entry["seq"]}

    def _previous_champion(self, name: str, current: str | None) -> str:
        moves = [e for e in self.hook.promotion_history(name) if e.get("alias") == self.alias and e.get("to") != e.get("from")]
        for entry in reversed(moves):
            if entry.get("to") == current and entry.get("from"):
                return str(entry["from"])
        self._fail(f"the promotion history of {name!r} has no champion before v{current}: name a version to restore")
        raise AssertionError  # unreachable
