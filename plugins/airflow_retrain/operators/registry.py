"""Register every candidate in MLflow as ``challenger``; move ``champion`` only to a gated version that wins.

Every alias move and every promotion decision is appended to the model's promotion history in the
registry (:meth:`MlflowHook.promotion_history`), under the model's promotion lease, so two runs (of one
pipeline, two pipelines sharing a model name, or two Airflow deployments sharing one registry) never
interleave and the champion never points at a version that did not pass its gates.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

from airflow_retrain import artifacts
from airflow_retrain.hooks.mlflow import (
    TAG,
    LeaseLost,
    LeaseUnavailable,
    MlflowHook,
    RegistryError,
    code_version,
)
from airflow_retrain.links.mlflow import MlflowCandidateVersionLink, MlflowChampionVersionLink, MlflowRunLink
from airflow_retrain.operators.base import RetrainBaseOperator

GATE_TAG = f"{TAG}.gate"
GATE_OUTCOME_TAG = f"{TAG}.gate_outcome"
CHAMPION = "champion"
CHALLENGER = "challenger"


class _RegistryOperator(RetrainBaseOperator):
    """An operator with a lazily built :class:`MlflowHook` and the lease settings.

    :param mlflow_conn_id: the MLflow connection.
    :param lease_wait_seconds: how long to wait for another run's promotion lease before failing.
    :param lease_settle_seconds: verify-after-write pause of the lease (see :meth:`MlflowHook.lease`).
    """

    def __init__(
        self,
        *,
        mlflow_conn_id: str = "mlflow_default",
        lease_wait_seconds: float = 300.0,
        lease_settle_seconds: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self.lease_wait_seconds = lease_wait_seconds
        self.lease_settle_seconds = lease_settle_seconds

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(self.mlflow_conn_id)

    def _lease(self, model_name: str, holder: str):
        return self.hook.lease(model_name, holder, wait_seconds=self.lease_wait_seconds,
                               settle_seconds=self.lease_settle_seconds)

    def _fail(self, message: str):
        raise AirflowFailException(message)


def signature_from_parquet(channels: list[str], drop: list[str], not_null: list[str] | None = None):
    """The model's input schema from the exported dataset's Parquet schema and null counts, not a sample.

    Integer columns that hold a null anywhere in the feature table (or whose nulls the dbt contract does
    not exclude, when ``not_null`` is given) are declared ``double``: MLflow cannot feed a missing value
    to a required integer column (``cannot convert NA to integer``), and XGBoost reads floats anyway.

    :param channels: folders of Parquet files (train and test: the whole feature table).
    :param drop: columns that are not features (id, label).
    :param not_null: columns the dbt contract declares not null; ``None`` to trust the data alone.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    files = sorted(p for folder in channels for p in Path(folder).rglob("*.parquet"))
    if not files:
        raise AirflowFailException(f"no Parquet files in {channels}: cannot derive the model signature")
    schema = pq.read_schema(files[0])
    nulls: dict[str, int] = {name: 0 for name in schema.names}
    for path in files:
        meta = pq.ParquetFile(path).metadata
        for rg in range(meta.num_row_groups):
            group = meta.row_group(rg)
            for i in range(group.num_columns):
                col = group.column(i)
                stats = col.statistics
                count = stats.null_count if stats is not None and stats.has_null_count else 1
                nulls[col.path_in_schema] = nulls.get(col.path_in_schema, 0) + count
    specs = []
    for field in schema:
        if field.name in drop:
            continue
        t = field.type
        may_be_null = nulls.get(field.name, 1) > 0 or (not_null is not None and field.name not in not_null)
        if pa.types.is_boolean(t):
            kind = "double" if may_be_null else "boolean"
        elif pa.types.is_integer(t):
            # long accepts int32/int64 input; double accepts them and NaN (MLflow refuses NA for any integer)
            kind = "double" if may_be_null else "long"
        elif pa.types.is_floating(t) or pa.types.is_decimal(t):
            kind = "double" if t.bit_width == 64 or pa.types.is_decimal(t) else "float"
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            kind = "string"
        elif pa.types.is_timestamp(t) or pa.types.is_date(t):
            kind = "datetime"
        else:
            raise AirflowFailException(f"feature column {field.name!r} has type {t} that the model signature "
                                       "cannot declare; cast it in the dbt model")
        specs.append(ColSpec(kind, field.name, required=not may_be_null))
    return ModelSignature(inputs=Schema(specs))


class RegisterModelOperator(_RegistryOperator):
    """Log a trained candidate to MLflow (params, metrics, model with signature), register it, alias it.

    Every candidate is registered, whatever the gates later decide; it becomes ``challenger`` (recorded in
    the promotion history) and its gate tags start as ``pending``. Its version tags say where it came
    from: pipeline, DAG run, code version (git SHA of ``RETRAIN_HOME``, else ``unknown``) and the data
    snapshot (relation + content fingerprint). A retry of the same DAG run reuses the version it
    already registered from the same training job, even when the failure hid a successful creation.
    The model, its ``metrics.json`` and the dataset channels (for the signature) are downloaded from the
    artifact store into a temporary folder; if they are gone (the run's teardown removed them), the task
    fails without retry, naming the missing URI -- clear the ``train`` task too, and the run trains again.

    :param model_name: registered model name.
    :param training: the result of :class:`TrainModelOperator` (``model_uri``, ``output_uri``).
    :param dataset: the result of :class:`ExportTrainingDatasetOperator` (Parquet channel URIs → signature).
    :param experiment: MLflow experiment name.
    :param flavor: MLflow flavor of the model files (``xgboost``).
    :param params_to_log: extra params to log (hyperparameters, spec fields).
    :param gates: names of the gates that will decide; each gets a ``pending`` tag.
    :param not_null_columns: columns the feature table's contract declares not null (signature).
    """

    template_fields = ("model_name", "training", "dataset", "params_to_log")
    operator_extra_links = (MlflowRunLink(), MlflowCandidateVersionLink())

    def __init__(
        self,
        *,
        model_name: str,
        training: dict[str, Any] | Any,
        dataset: dict[str, Any] | Any,
        experiment: str,
        flavor: str = "xgboost",
        params_to_log: dict[str, Any] | None = None,
        gates: list[str] | None = None,
        not_null_columns: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.training = training
        self.dataset = dataset
        self.experiment = experiment
        self.flavor = flavor
        self.params_to_log = params_to_log
        self.gates = gates or ["metrics"]
        self.not_null_columns = not_null_columns

    def execute(self, context) -> dict[str, Any]:
        try:
            return self._execute(context)
        except RegistryError as e:
            raise RuntimeError(str(e)) from None  # transient by now only if the budget ran out: Airflow retries

    def _execute(self, context) -> dict[str, Any]:

        run = self.run_identity(context)
        holder = f"{run.dag_id}/{run.run_id}/{self.task_id}"
        existing = self.hook.find_version_by_tag(self.model_name, f"{TAG}.run_key", run.run_key)
        if existing is not None and (existing.tags or {}).get(f"{TAG}.job_name") != self.training["job_name"]:
            existing = None  # a cleared run that trained again registers its new model
        if existing is not None:
            result = self._result(existing)
            self.log.info("Run %s already registered %s v%s; reusing it", run.run_key, self.model_name, result["version"])
            self._make_challenger(result["version"], holder)
            return result
        local = Path(tempfile.mkdtemp(prefix="retrain-register-"))
        try:
            return self._register(context, run, holder, local)
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def _download(self, uri: str, local: Path, what: str) -> Path:
        try:
            return artifacts.download(self.artifact_store.path(uri), local)
        except artifacts.ArtifactNotFound:
            raise AirflowFailException(
                f"cannot register {self.model_name}: {what} {uri} no longer exists in the artifact store (the "
                f"run's teardown removes its scratch); clear the train task as well so that the run trains again"
            ) from None

    def _register(self, context, run, holder: str, local: Path) -> dict[str, Any]:
        import pandas as pd

        model_dir = self._download(self.training["model_uri"], local / "model", "the trained model")
        output_dir = self._download(self.training["output_uri"], local / "output", "the training output")
        channels = {
            c: self._download(uri, local / "data" / c, "the holdout channel" if c == "test" else f"the {c} channel")
            for c, uri in self.dataset["channels"].items()
            if c in ("train", "test")
        }
        drop = [self.dataset["id_column"], self.dataset["target_column"]]
        signature = signature_from_parquet([str(channels[c]) for c in ("train", "test") if c in channels], drop,
                                           self.not_null_columns)
        parquet = sorted(channels["test"].rglob("*.parquet"))
        if not parquet:
            raise AirflowFailException(f"the holdout channel {self.dataset['channels']['test']} holds no Parquet file")
        example = pd.read_parquet(parquet[0]).head(3).drop(columns=drop)
        info = self.training.get("info", {})
        extra = self.params_to_log or {}
        params = {
            **{f"hp.{k}": v for k, v in extra.get("hyperparameters", {}).items()},
            **{k: v for k, v in extra.items() if k != "hyperparameters"},
            "dataset.relation": self.dataset["relation"],
            "dataset.fingerprint": self.dataset["fingerprint"],
            "dataset.rows_train": self.dataset["rows"]["train"],
            "dataset.rows_test": self.dataset["rows"]["test"],
            "training.job_name": self.training["job_name"],
            "training.backend": self.training["backend"],
            "training.device": info.get("device", "unknown"),
        }
        metrics = {k: v for k, v in self.training["metrics"].items() if v is not None}
        metrics["training_compute_seconds"] = float(self.training["compute_seconds"])
        cost = self.training.get("cost") or {}
        if cost.get("usd") is not None:  # an unknown price is logged as a param, never as $0
            metrics["training_cost_usd"] = float(cost["usd"])
            if cost.get("spot"):
                metrics["training_spot_savings_usd"] = float(cost.get("spot_savings_usd") or 0.0)
        params["training.cost"] = (
            f"{cost.get('price_source', 'unknown')} price, table {cost.get('price_table_version', '?')}, "
            f"{cost.get('instance_count', 1)} x {cost.get('instance_type', '?')} in {cost.get('region') or '?'}"
            + (", spot" if cost.get("spot") else "")
        )
        identity = {
            f"{TAG}.pipeline": self.pipeline,
            f"{TAG}.dag_id": run.dag_id,
            f"{TAG}.run_id": run.run_id,
            f"{TAG}.run_key": run.run_key,
            f"{TAG}.job_name": self.training["job_name"],
            f"{TAG}.code_version": code_version(),
            f"{TAG}.data.relation": self.dataset["relation"],
            f"{TAG}.data.fingerprint": self.dataset["fingerprint"],
        }
        version_tags = {
            **identity,
            **{f"{GATE_TAG}.{g}": "pending" for g in self.gates},
            GATE_OUTCOME_TAG: "pending",
        }
        result = self.hook.log_candidate(
            experiment=self.experiment,
            run_name=f"{run.dag_id}/{run.run_key}",
            params=params,
            metrics=metrics,
            tags=identity,
            model_dir=model_dir,
            flavor=self.flavor,
            signature=signature,
            input_example=example,
            model_name=self.model_name,
            version_tags=version_tags,
            artifacts={"training": output_dir / "metrics.json"},
        )
        self._make_challenger(result["version"], holder)
        MlflowRunLink.persist(context, result.get("run_url"))
        MlflowCandidateVersionLink.persist(context, result.get("version_url"))
        self.log.info("Registered %s version %s (run %s) as %s", self.model_name, result["version"],
                      result["run_id"], CHALLENGER)
        return result

    def _make_challenger(self, version: str, holder: str) -> None:
        with self._lease(self.model_name, holder) as lease:
            current = self.hook.get_version_by_alias(self.model_name, CHALLENGER)
            if current is not None and int(current.version) >= int(version):
                return  # already ours, or a newer candidate is the challenger
            self.hook.move_alias(lease, CHALLENGER, version, {
                "action": "challenger", "by": holder, "reason": "registered candidate",
            })

    def _result(self, mv) -> dict[str, Any]:
        run = self.hook.call(f"get run {mv.run_id}", self.hook.client.get_run, mv.run_id)
        return {
            "run_id": mv.run_id,
            "experiment_id": run.info.experiment_id,
            "model_uri": f"models:/{self.model_name}/{mv.version}",
            "source": mv.source,
            "model_name": self.model_name,
            "version": str(mv.version),
            "run_url": self.hook.run_url(run.info.experiment_id, mv.run_id),
            "version_url": self.hook.version_url(self.model_name, mv.version),
        }


class PromoteModelOperator(_RegistryOperator):
    """Move ``champion`` to the candidate only if every gate passed and it beats the champion.

    The whole decision runs under the model's promotion lease: the gate tags and the champion are read
    (again) under it, the lease is verified right before the alias moves, and the decision is appended to
    the promotion history whatever it is (promoted, kept, rejected by a human). The comparison is the
    champion gate's verdict (``comparison``: the champion re-scored on the same holdout) when there is
    one, else the stored primary metric of both runs. A verdict made against another champion than the one
    found under the lease is stale: nothing moves and the task fails, to be rerun.

    With ``mode="decide"`` nothing is written: the operator returns the decision and a Markdown summary
    for the approval step. With ``approval`` (the result of :class:`PromotionApprovalOperator`) a
    rejection or a timeout is recorded and the champion stays.

    :param candidate: the result of :class:`RegisterModelOperator`.
    :param primary_metric: metric the candidate and the champion are compared on.
    :param greater_is_better: direction of ``primary_metric``.
    :param min_improvement: the candidate must beat the champion by at least this much.
    :param required_gates: gates whose ``retrain.gate.<name>`` tag must read ``passed``.
    :param comparison: the champion gate's verdict dict (``details.decision``, values, versions); ``None``
        to read ``gates/champion.json`` from the candidate's run, else to compare stored metrics.
    :param approval: the approval step's result, or ``None`` when no approval is required.
    :param mode: ``promote`` (default) or ``decide``.
    :param alias: the alias to move.
    :return: the decision, the versions before/after and the compared numbers.
    """

    template_fields = ("candidate", "comparison", "approval")
    operator_extra_links = (MlflowCandidateVersionLink(), MlflowChampionVersionLink())
    ui_color = "#ffd700"

    def __init__(
        self,
        *,
        candidate: dict[str, Any] | Any,
        primary_metric: str,
        greater_is_better: bool = True,
        min_improvement: float = 0.0,
        required_gates: list[str] | None = None,
        comparison: dict[str, Any] | Any = None,
        approval: dict[str, Any] | Any = None,
        mode: str = "promote",
        alias: str = CHAMPION,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("promote", "decide"):
            raise ValueError(f"mode must be 'promote' or 'decide', not {mode!r}")
        self.candidate = candidate
        self.primary_metric = primary_metric
        self.greater_is_better = greater_is_better
        self.min_improvement = min_improvement
        self.required_gates = required_gates or ["metrics"]
        self.comparison = comparison
        self.approval = approval
        self.mode = mode
        self.alias = alias

    def _metric(self, run_id: str, who: str) -> float:
        value = self.hook.run_metrics(run_id).get(self.primary_metric)
        if value is None or not math.isfinite(value):
            self._fail(f"{who} has no finite {self.primary_metric!r} metric in MLflow run {run_id}: cannot compare, "
                       "nothing promoted")
        return float(value)

    def execute(self, context) -> dict[str, Any]:
        try:
            if self.mode == "decide":
                decision = self.decide(context)
                decision["body_md"] = approval_body(decision)
                return decision
            return self.promote(context)
        except LeaseUnavailable as e:
            raise AirflowFailException(str(e)) from None
        except RegistryError as e:
            raise RuntimeError(str(e)) from None  # Airflow retries; a retry completes what is missing

    def _gates_not_passed(self, tags: dict[str, str]) -> dict[str, str]:
        states = {g: tags.get(f"{GATE_TAG}.{g}", "missing") for g in self.required_gates}
        return {g: s for g, s in states.items() if s != "passed"}

    def _comparison(self, run_id: str) -> dict[str, Any] | None:
        if self.comparison:
            return dict(self.comparison)
        if "champion" in self.required_gates:
            return self.hook.load_dict(run_id, "gates/champion.json")
        return None

    def decide(self, context) -> dict[str, Any]:
        """The decision against the current champion; reads only."""
        run = self.run_identity(context)
        name = self.candidate["model_name"]
        version = str(self.candidate["version"])
        mv = self.hook.get_version(name, version)
        not_passed = self._gates_not_passed(mv.tags or {})
        if not_passed:
            self._fail(f"{name} v{version} cannot become {self.alias}: gates not passed {not_passed}")
        champion = self.hook.get_version_by_alias(name, self.alias)
        decision: dict[str, Any] = {
            "model_name": name,
            "candidate_version": version,
            "primary_metric": self.primary_metric,
            "greater_is_better": self.greater_is_better,
            "min_improvement": self.min_improvement,
            "candidate_value": None,
            "champion_before": str(champion.version) if champion is not None else None,
            "champion_value": None,
            "delta": None,
            "evidence": "stored metrics",
            "gates": {k.removeprefix(f"{GATE_TAG}."): v for k, v in (mv.tags or {}).items()
                      if k.startswith(f"{GATE_TAG}.") and k.count(".") == 2},
            "dag_run": f"{run.dag_id}/{run.run_id}",
        }
        if champion is not None and str(champion.version) == version:
            decision.update(promote=False, decision="already_champion", reason=f"v{version} is already {self.alias}")
            return decision
        verdict = self._comparison(mv.run_id)
        if verdict is not None:
            return self._decide_from_verdict(decision, verdict, champion)
        candidate_value = self._metric(mv.run_id, f"candidate {name} v{version}")
        decision["candidate_value"] = candidate_value
        if champion is None:
            decision.update(promote=True, decision="promoted", reason=f"no {self.alias} yet")
            return decision
        champion_value = self._metric(champion.run_id, f"{self.alias} {name} v{champion.version}")
        delta = candidate_value - champion_value if self.greater_is_better else champion_value - candidate_value
        promote = delta >= self.min_improvement and delta > 0
        decision.update(
            champion_value=champion_value, delta=delta, promote=promote,
            decision="promoted" if promote else "kept_champion",
            reason=(f"candidate v{version} {self.primary_metric}={candidate_value:.4f} "
                    f"{'beats' if promote else 'does not beat'} {self.alias} v{champion.version} "
                    f"{self.primary_metric}={champion_value:.4f} by the required {self.min_improvement} "
                    f"(delta {delta:+.4f})"),
        )
        return decision

    def _decide_from_verdict(self, decision: dict[str, Any], verdict: dict[str, Any], champion) -> dict[str, Any]:
        details = verdict.get("details") or verdict
        compared = details.get("champion_version")
        current = str(champion.version) if champion is not None else None
        compared = str(compared) if compared is not None else None
        decision.update(
            evidence=f"champion gate: re-scored on the same holdout ({details.get('holdout_rows', '?')} rows)",
            candidate_value=details.get("candidate_value"), champion_value=details.get("champion_value"),
            delta=details.get("delta"), primary_metric=details.get("metric", self.primary_metric),
        )
        if compared != current:
            self._fail(f"the champion gate compared {decision['model_name']} v{decision['candidate_version']} with "
                       f"{self.alias} v{compared}, but {self.alias} is now v{current}: the comparison is stale, "
                       "nothing promoted; rerun the champion gate")
        outcome = details.get("decision")
        if outcome in ("beats", "no_champion"):
            decision.update(promote=True, decision="promoted", reason=verdict.get("message") or outcome)
        elif outcome == "does_not_beat":
            decision.update(promote=False, decision="kept_champion", reason=verdict.get("message") or outcome)
        elif outcome == "already_champion":
            decision.update(promote=False, decision="already_champion", reason=verdict.get("message") or outcome)
        else:
            self._fail(f"champion gate verdict has no usable decision ({outcome!r}): nothing promoted")
        return decision

    def promote(self, context, max_rounds: int = 5) -> dict[str, Any]:
        """Decide and act under the lease; a lease lost before the alias move (nothing written) means
        deciding again under a fresh lease, up to ``max_rounds`` times."""
        for round_ in range(1, max_rounds + 1):
            try:
                return self._promote_once(context)
            except LeaseLost as e:
                if round_ == max_rounds:
                    raise
                self.log.warning("%s; deciding again (round %d/%d)", e, round_ + 1, max_rounds)
        raise AssertionError("unreachable")

    def _promote_once(self, context) -> dict[str, Any]:
        run = self.run_identity(context)
        name = self.candidate["model_name"]
        version = str(self.candidate["version"])
        holder = f"{run.dag_id}/{run.run_id}/{self.task_id}"
        with self._lease(name, holder) as lease:
            decision = self.decide(context)  # under the lease: gates and champion as they are now
            approval = self.approval or None
            if (decision.get("promote") and approval is not None and approval.get("approved")
                    and approval.get("champion_before", decision["champion_before"]) != decision["champion_before"]):
                approval = {**approval, "approved": False,
                            "reason": f"approved against champion v{approval.get('champion_before')}, but the champion "
                                      f"is now v{decision['champion_before']}: approval is stale"}
            if decision.get("promote") and approval is not None and not approval.get("approved"):
                why = approval.get("reason") or ("approval timed out" if approval.get("timed_out") else "rejected")
                decision.update(promote=False, decision="rejected",
                                reason=f"{decision['reason']}; not approved by {approval.get('by') or 'nobody'}: {why}")
            if decision.get("decision") == "already_champion":
                entry = self._record_unrecorded_move(lease, version, holder, decision)
            elif decision.get("promote"):
                not_passed = self._gates_not_passed(self.hook.get_version(name, version).tags or {})
                if not_passed:  # re-checked right before the move: a gate may have been re-run
                    self._fail(f"{name} v{version}: gates not passed {not_passed}; nothing promoted")
                entry = self.hook.move_alias(lease, self.alias, version, {
                    "action": "promote", "by": holder, "reason": decision["reason"],
                    "candidate_version": version, "evidence": decision["evidence"],
                    "approved_by": (approval or {}).get("by"),
                }, expected_from=decision["champion_before"])
            else:
                entry = self.hook.append_history(lease, {
                    "action": "kept" if decision["decision"] == "kept_champion" else decision["decision"],
                    "alias": self.alias, "from": decision["champion_before"], "to": decision["champion_before"],
                    "by": holder, "reason": decision["reason"], "candidate_version": version,
                })
            after = self.hook.get_version_by_alias(name, self.alias)
            decision["champion_after"] = str(after.version) if after is not None else None
            decision["promoted"] = bool(decision.get("promote")) and decision["champion_after"] == version
            decision["history_seq"] = entry["seq"] if entry else None
            outcome = "passed" if not self._gates_not_passed(self.hook.get_version(name, version).tags or {}) else "failed"
            self.hook.set_version_tags(name, version, {
                GATE_OUTCOME_TAG: outcome,
                f"{TAG}.promotion.decision": decision["decision"],
                f"{TAG}.promotion.reason": decision["reason"][:4000],
                f"{TAG}.promotion.compared_to": decision["champion_before"] or "none",
                f"{TAG}.promotion.dag_run": decision["dag_run"],
            })
        self.hook.log_dict(self.hook.get_version(name, version).run_id, decision, "promotion/decision.json")
        MlflowCandidateVersionLink.persist(context, self.hook.version_url(name, version))
        MlflowChampionVersionLink.persist(context, self.hook.version_url(name, decision["champion_after"] or version))
        self.log.info("%s: %s", decision["decision"], decision["reason"])
        self.log.info("Decision: %s", json.dumps(decision, default=str))
        return decision


    def _record_unrecorded_move(self, lease, version: str, holder: str, decision: dict[str, Any]):
        """A retry after a failure between the alias move and its history entry writes the missing entry."""
        moves = [e for e in self.hook.promotion_history(lease.model_name) if e.get("alias") == self.alias
                 and e.get("to") != e.get("from")]
        if moves and moves[-1].get("to") == version:
            return None
        self.log.warning("%s@%s is v%s but the history does not say so: recording the move now",
                         lease.model_name, self.alias, version)
        return self.hook.append_history(lease, {
            "alias": self.alias, "from": moves[-1].get("to") if moves else None, "to": version,
            "action": "promote", "by": holder, "candidate_version": version,
            "reason": "recorded by a retry: the alias had moved before the history entry was written",
        })


def approval_body(decision: dict[str, Any]) -> str:
    """The Markdown a reviewer sees in the approval step: the decision, the comparison, every gate."""
    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("–" if v is None else str(v))

    gates = "\n".join(f"| `{g}` | {s} |" for g, s in sorted(decision.get("gates", {}).items()))
    return (
        f"### Promote {decision['model_name']} v{decision['candidate_version']} to champion?\n\n"
        f"**Recommendation:** {decision.get('decision')} — {decision.get('reason')}\n\n"
        f"| | version | {decision.get('primary_metric')} |\n|---|---|---|\n"
        f"| candidate | v{decision['candidate_version']} | {fmt(decision.get('candidate_value'))} |\n"
        f"| champion | {('v' + decision['champion_before']) if decision.get('champion_before') else 'none'} | "
        f"{fmt(decision.get('champion_value'))} |\n\n"
        f"Delta {fmt(decision.get('delta'))} (required {decision.get('min_improvement')}); evidence: "
        f"{decision.get('evidence')}.\n\n| gate | outcome |\n|---|---|\n{gates}\n\n"
        "Approve moves `champion`; Reject (or no answer before the timeout) keeps it. Give a reason."
    )


class RollbackModelOperator(_RegistryOperator):
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


class PromotionApprovalOperator(ApprovalOperator):
    """Ask a human to approve the promotion, showing the gate evidence and the champion comparison.

    Only asked when the decision proposes a promotion; otherwise it returns at once. The answer is
    returned (never skips downstream): the promote task records a rejection, with its reason, in the
    history. No answer before ``response_timeout`` counts as a rejection (the default option).

    :param decision: the result of :class:`PromoteModelOperator` in ``decide`` mode.
    :return: ``{"approved", "by", "reason", "timed_out", "asked"}``.
    """

    template_fields = (*ApprovalOperator.template_fields, "decision")
    ui_color = "#f9e79f"

    def __init__(self, *, decision: dict[str, Any] | Any, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Approve the promotion?")
        kwargs.setdefault("defaults", [ApprovalOperator.REJECT])
        kwargs.setdefault("params", {"reason": Param("", type="string", description="why you approve or reject")})
        super().__init__(**kwargs)
        self.decision = decision

    def execute(self, context):
        decision = self.decision or {}
        if not decision.get("promote"):
            self.log.info("Nothing to approve: %s (%s)", decision.get("decision"), decision.get("reason"))
            return {"approved": False, "asked": False, "by": None, "timed_out": False,
                    "reason": f"nothing to approve: {decision.get('decision')}"}
        self.subject = (f"Promote {decision['model_name']} v{decision['candidate_version']} to champion "
                        f"(now {('v' + decision['champion_before']) if decision.get('champion_before') else 'none'})?")
        self.body = decision.get("body_md") or approval_body(decision)
        return super().execute(context)

    def execute_complete(self, context, event: dict[str, Any]) -> dict[str, Any]:
        if "error" in event:  # timed out without defaults: a rejection, not a failed task
            self.log.warning("No answer: %s", event.get("error"))
            return {"approved": False, "asked": True, "by": None, "timed_out": True, "reason": "approval timed out"}
        result = HITLOperator.execute_complete(self, context=context, event=event)  # validates; never skips
        chosen = result["chosen_options"][0]
        user = result.get("responded_by_user") or {}
        if not isinstance(user, dict):  # a pydantic HITLUser on some paths, a TypedDict on others
            user = {"id": getattr(user, "id", None), "name": getattr(user, "name", None)}
        timed_out = bool(event.get("timedout"))
        reason = (result.get("params_input") or {}).get("reason") or ""
        if timed_out:
            reason = "approval timed out"
        answer = {"approved": chosen == self.APPROVE and not timed_out, "asked": True,
                  "candidate_version": (self.decision or {}).get("candidate_version"),
                  "champion_before": (self.decision or {}).get("champion_before"),
                  "by": None if timed_out else (user.get("name") or user.get("id")), "timed_out": timed_out,
                  "reason": reason}
        self.log.info("Approval answer: %s", answer)
        return answer


class MirrorToSageMakerOperator(RetrainBaseOperator):
    """Register the new champion in the SageMaker Model Registry too (a package in a group, ``Approved``).

    Runs after ``promote``; does nothing unless the candidate was promoted. The model package group is
    created when absent; the package's metadata points at the MLflow version (name, version, run, source,
    tracking URI without credentials). Idempotent: a package already carrying this MLflow version is reused.

    :param decision: the result of :class:`PromoteModelOperator`.
    :param model_package_group: SageMaker model package group name.
    :param aws_conn_id: Airflow AWS connection (its extra ``endpoint_url`` points at a fake cloud).
    :param region: AWS region; default: the connection's.
    """

    template_fields = ("decision", "model_package_group")
    ui_color = "#ffcc80"

    def __init__(self, *, decision: dict[str, Any] | Any, model_package_group: str, aws_conn_id: str = "aws_default",
                 region: str | None = None, mlflow_conn_id: str = "mlflow_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.decision = decision
        self.model_package_group = model_package_group
        self.aws_conn_id = aws_conn_id
        self.region = region
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def sagemaker(self):
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        return SageMakerHook(aws_conn_id=self.aws_conn_id, region_name=self.region).conn

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(self.mlflow_conn_id)

    def execute(self, context) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        decision = self.decision or {}
        if not decision.get("promoted"):
            self.log.info("Not promoted (%s): nothing to mirror", decision.get("decision"))
            return {"mirrored": False, "reason": f"not promoted: {decision.get('decision')}"}
        name, version = decision["model_name"], str(decision["candidate_version"])
        mv = self.hook.get_version(name, version)
        metadata = {
            "mlflow.model_name": name, "mlflow.version": version, "mlflow.run_id": mv.run_id,
            "mlflow.source": mv.source[:1000], "mlflow.tracking_uri": self.hook.tracking_uri,
            "retrain.pipeline": self.pipeline,
        }
        sm = self.sagemaker
        group = self.model_package_group
        try:
            sm.describe_model_package_group(ModelPackageGroupName=group)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("ValidationException", "ResourceNotFound"):
                raise
            sm.create_model_package_group(ModelPackageGroupName=group,
                                          ModelPackageGroupDescription=f"MLflow model {name} (airflow-retrain)")
            self.log.info("Created SageMaker model package group %s", group)
        packages = sm.list_model_packages(ModelPackageGroupName=group, MaxResults=100).get("ModelPackageSummaryList", [])
        for summary in packages:
            described = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            props = described.get("CustomerMetadataProperties") or {}
            if props.get("mlflow.model_name") == name and props.get("mlflow.version") == version:
                self.log.info("%s v%s is already mirrored as %s", name, version, summary["ModelPackageArn"])
                return {"mirrored": True, "model_package_arn": summary["ModelPackageArn"], "reused": True}
        created = sm.create_model_package(
            ModelPackageGroupName=group,
            ModelPackageDescription=f"MLflow models:/{name}/{version} (run {mv.run_id})",
            ModelApprovalStatus="Approved",
            CustomerMetadataProperties=metadata,
        )
        arn = created["ModelPackageArn"]
        self.log.info("Mirrored %s v%s to SageMaker model package %s (Approved)", name, version, arn)
        return {"mirrored": True, "model_package_arn": arn, "reused": False}
