"""The one place a valid spec is checked against the world around it: the dbt project (its cached
manifest, dbt's own cached selection on it, and its enforced contracts), the SageMaker/Vertex catalogs and the price
table, and the training script's declared metrics.

:func:`check_spec` runs after the models validated a spec (:mod:`.models`) and returns every problem
found, each naming its field; :func:`~airflow_retrain.spec.loader.load_spec` raises them as one
:class:`~airflow_retrain.spec.models.SpecError`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from airflow_retrain.cost import UnknownPriceError, max_job_cost
from airflow_retrain.dbt.contracts import dbt_model_names, model_contract
from airflow_retrain.dbt.manifest import ManifestError, ManifestIndex, load_index
from airflow_retrain.dbt.selection import Selection, cached_selection
from airflow_retrain.gates.model import SCORABLE_METRICS
from airflow_retrain.spec.models import AssetSchedule, PipelineSpec
from airflow_retrain.training.sagemaker_catalog import (
    UnknownImageError,
    gpus_per_instance,
    training_instance_types,
    xgboost_image_uri,
)
from airflow_retrain.training.vertex_catalog import machine_problems, price_key


def check_spec(spec: PipelineSpec) -> list[str]:
    """Every problem of a validated spec with its surroundings (empty when it can be built and run).

    Paths come first: one outside the project root stops the other checks (they would read files there).
    The gates are checked only once the dbt project, the training settings and the script are sound.
    """
    outside = [
        problem
        for field, relative in (
            ("dbt.project_dir", spec.dbt.project_dir),
            ("dbt.profiles_dir", spec.dbt.profiles_dir),
            ("training.entry_point", spec.training.entry_point),
        )
        if relative is not None
        if (problem := _check_inside_project(spec, field, relative))
    ]
    if outside:
        return outside
    problems = _check_dbt(spec) + _check_training(spec)
    entry = spec.path(spec.training.entry_point)
    if not entry.is_file():
        problems.append(f"training.entry_point: no such file {entry}")
    elif not problems:
        problems += _check_gates(spec)
    if spec.monitoring is not None and not outside:
        problems += check_monitoring(spec)
    return problems




def check_monitoring(spec: PipelineSpec) -> list[str]:
    """``monitoring:`` against the dbt project: the scoring model holds the id and every feature the
    champion needs (by the models' YAML contracts), and the label source's columns exist with usable types."""
    from airflow_retrain.gates.data import dbt_type_family

    monitoring = spec.monitoring
    assert monitoring is not None
    project = spec.path(spec.dbt.project_dir)
    if not (project / "dbt_project.yml").is_file():
        return []  # reported by the dbt checks
    index: ManifestIndex | None
    try:
        index = load_index(project, allow_stale=True)
        models = {n["name"] for n in index.nodes.values() if n["resource_type"] == "model"}
    except ManifestError:
        index, models = None, dbt_model_names(project)

    def dbt_contract_columns(_project: Path, model: str) -> dict[str, str | None] | None:
        """The columns the manifest knows for ``model`` (a contract's, or those its YAML declares)."""
        if index is None:
            return None
        for node in index.nodes.values():
            if node["resource_type"] == "model" and node["name"] == model:
                return dict(node.get("columns") or {}) or None
        return None

    problems = []
    feature_table = spec.dataset.feature_table.split(".")[-1]
    features = dbt_contract_columns(project, feature_table) or {}
    needed = [c for c in features if c != spec.dataset.target_column]
    if monitoring.scoring_model not in models:
        problems.append(f"monitoring.scoring_model: unknown dbt model {monitoring.scoring_model!r} in {project}")
    else:
        scoring = dbt_contract_columns(project, monitoring.scoring_model)
        if index is None:
            pass  # no manifest yet: the columns are checked once dbt_build has cached one (a spec is never refused for it)
        elif scoring is None:
            problems.append(
                f"monitoring.scoring_model: dbt model {monitoring.scoring_model!r} declares no columns in its YAML; "
                f"declare them (the id and the features of {feature_table}) so they can be checked before scoring"
            )
        elif missing := [c for c in needed if c not in scoring]:
            problems.append(
                f"monitoring.scoring_model: dbt model {monitoring.scoring_model!r} lacks column(s) the champion "
                f"needs: {', '.join(missing)} (from {feature_table})"
            )
    labels = monitoring.labels
    if labels is not None:
        if labels.model is None:
            pass  # a table outside dbt: read (and its column types checked) when the scoring DAG runs
        elif labels.model not in models:
            problems.append(f"monitoring.labels.model: unknown dbt model {labels.model!r} in {project}")
        elif (columns := dbt_contract_columns(project, labels.model)) is not None:
            wanted = (
                ("monitoring.labels.id_column", labels.id_column or spec.dataset.id_column, None),
                ("monitoring.labels.label_column", labels.label_column or spec.dataset.target_column,
                 ("int", "float", "bool")),
                ("monitoring.labels.event_time_column", labels.event_time_column, ("datetime",)),
            )
            for field_name, column, families in wanted:
                if column not in columns:
                    problems.append(f"{field_name}: column {column!r} is not in dbt model {labels.model!r}")
                    continue
                family = dbt_type_family(columns[column])
                if families and family is not None and family not in families:
                    problems.append(
                        f"{field_name}: column {column!r} of {labels.model!r} is {columns[column]}; "
                        f"expected {' or '.join(families)}"
                    )
    return problems


def _check_inside_project(spec: PipelineSpec, field: str, relative: str) -> str | None:
    """The problem with a spec path that is absolute or resolves (after symlinks) outside the root."""
    root = Path(spec.root).resolve()
    if Path(relative).is_absolute():
        return f"{field}: {relative!r} is an absolute path; give a path relative to the project root {root}"
    resolved = spec.path(relative)
    if not resolved.is_relative_to(root):
        return f"{field}: {relative!r} resolves to {resolved}, outside the project root {root}"
    return None




def _check_dbt(spec: PipelineSpec) -> list[str]:
    """The feature model and the dbt selection, as far as they can be known without running dbt.

    A stale or missing manifest never rejects a spec (an analyst who just added a model has no manifest of
    it yet): the feature table is then looked up by file name, and the selection is left to ``dbt_build``,
    which refreshes the cache. Only dbt's own verdict on a manifest of the project's current files (the
    cached ``dbt ls``, :mod:`airflow_retrain.dbt.selection`) rejects a selection, naming that manifest.
    """
    project = spec.path(spec.dbt.project_dir)
    if not (project / "dbt_project.yml").is_file():
        return [f"dbt.project_dir: no dbt_project.yml in {project}"]
    try:
        index = load_index(project, allow_stale=True)
    except ManifestError:
        index = None
    fresh = index is not None and not index.stale
    models = {n["name"] for n in index.nodes.values() if n["resource_type"] == "model"} if index else set()
    if not fresh:
        models |= dbt_model_names(project)
    problems = []
    feature = spec.dataset.feature_table.split(".")[-1]
    if feature not in models:
        problems.append(f"dataset.feature_table: unknown dbt model {spec.dataset.feature_table!r} in {project}")
    if isinstance(spec.schedule, AssetSchedule):
        for i, name in enumerate(spec.schedule.assets):
            if name not in models:
                problems.append(f"schedule.assets[{i}]: unknown dbt model {name!r} in {project}")
    if not fresh:
        return problems
    assert index is not None
    selection = cached_selection(index, spec.dbt.select, spec.dbt.exclude, spec.dbt.selector)
    if selection is None:  # not selected by dbt yet: dbt_build does, and fails naming what matches nothing
        return problems
    if selection.problem():
        return problems + _selection_problems(spec, selection)
    if not problems and not any(
        index.nodes.get(u, {}).get("name") == feature for u in selection.unique_ids
    ):
        problems.append(f"dataset.feature_table: {feature!r} is not in the dbt selection, so it would not be built")
    return problems


def _selection_problems(spec: PipelineSpec, selection: Selection) -> list[str]:
    """dbt's verdict on the spec's selection, each problem on the field that holds the criterion."""
    if selection.error:
        field = "dbt.selector" if spec.dbt.selector else "dbt.select"
        return [f"{field}: {selection.problem()}"]
    problems = []
    for criterion in selection.unmatched:
        field = "dbt.select"
        for name, items in (("select", spec.dbt.select), ("exclude", spec.dbt.exclude)):
            for i, item in enumerate(items):
                if criterion in item.split():
                    field = f"dbt.{name}[{i}]"
        problems.append(
            f"{field}: dbt selector {criterion!r} matches no node (checked by dbt ls on {selection.where()})"
        )
    return problems or [f"dbt.select: {selection.problem()}"]


def _check_training(spec: PipelineSpec) -> list[str]:
    """Backend settings, instance type, price and budget: everything knowable before a job starts."""
    training, res = spec.training, spec.training.resources
    problems: list[str] = []
    region = None
    if training.backend == "sagemaker":
        sm = training.sagemaker
        if sm is None:
            return ["training.sagemaker: required with backend 'sagemaker' (role_arn, bucket, ...)"]
        region = sm.region
        if sm.image is None:
            try:
                xgboost_image_uri(sm.region, sm.framework_version)
            except UnknownImageError as e:
                problems.append(f"training.sagemaker.image: not set and {e}; name an image")
        if res.instance_type not in training_instance_types():
            problems.append(
                f"training.resources.instance_type: {res.instance_type!r} is not a SageMaker training "
                f"instance type (botocore's SageMaker model lists e.g. ml.m5.xlarge, ml.g5.xlarge)"
            )
            return problems
        if res.gpu == "required" and (problem := _sagemaker_gpu_problem(res.instance_type)):
            problems.append(problem)
    elif training.sagemaker is not None:
        problems.append(f"training.sagemaker: set, but training.backend is {training.backend!r}")
    instance_type, instance_count = res.instance_type, res.instance_count
    if training.backend == "vertex":
        vx = training.vertex
        if vx is None:
            return ["training.vertex: required with backend 'vertex' (region, staging_bucket, machine_type, ...)"]
        region = vx.region
        problems += machine_problems(vx.machine_type, vx.accelerator_type, vx.accelerator_count, "training.vertex")
        if problems:
            return problems
        if res.gpu == "required" and not vx.accelerator_type:  # A2/A3/G2 without one failed machine_problems
            problems.append(
                f"training.resources.gpu: 'required', but training.vertex.machine_type {vx.machine_type} has no GPU "
                "and training.vertex.accelerator_type is not set; attach one (e.g. NVIDIA_TESLA_T4) or set gpu: auto"
            )
        # one replica with all its GPUs is the priced instance: 4 x T4 costs (and counts) four T4s
        instance_type = price_key(vx.machine_type, vx.accelerator_type, vx.accelerator_count)
        instance_count = vx.replica_count
    elif training.vertex is not None:
        problems.append(f"training.vertex: set, but training.backend is {training.backend!r}")
    if training.spot and training.backend == "local":
        problems.append("training.spot: the local backend has no spot capacity; use sagemaker or vertex")
    spot = (
        training.spot
        or bool(training.sagemaker and training.sagemaker.spot)
        or bool(training.vertex and training.vertex.spot)
    )
    try:
        worst = max_job_cost(
            training.backend,
            instance_type,
            instance_count,
            res.max_runtime_seconds,
            res.hourly_price_usd,
            region=region,
            spot=spot,
        )
    except UnknownPriceError as e:
        field = "training.vertex.machine_type" if training.backend == "vertex" else "training.resources.instance_type"
        problems.append(f"{field}: {e}")
        return problems
    if training.max_cost_usd is not None and worst.usd > training.max_cost_usd:
        problems.append(
            f"training.max_cost_usd: a job may cost up to ${worst.usd:.2f} ({instance_count} x "
            f"{instance_type} at ${worst.hourly_price_usd}/h for max_runtime_seconds "
            f"{res.max_runtime_seconds}), above the budget of ${training.max_cost_usd:.2f}"
        )
    return problems


def _sagemaker_gpu_problem(instance_type: str) -> str | None:
    """``gpu: required`` on a SageMaker instance type without a GPU (by the catalog's GPU counts)."""
    if gpus_per_instance(instance_type) == 0:  # None: a GPU family whose count the catalog lacks
        return (
            f"training.resources.gpu: 'required', but training.resources.instance_type {instance_type} has no "
            "GPU; choose a GPU instance type (e.g. ml.g5.xlarge) or set gpu: auto"
        )
    return None



_METRICS_LINE = re.compile(r"^METRICS\s*(?::[^=]*)?=", re.MULTILINE)


def declared_metrics(entry_point: Path) -> list[str] | None:
    """The metric names a training script declares in a module-level ``METRICS = [...]`` literal (read
    with :mod:`ast`, never imported); ``None`` when it declares none."""
    try:
        text = entry_point.read_text()
    except (OSError, ValueError):
        return None
    match = _METRICS_LINE.search(text)
    if match is None:
        return None
    # Parse just the statement (the whole script costs tens of ms at DAG-parse time): grow it line by
    # line until it is complete.
    lines = text[match.start() :].splitlines()
    for end in range(1, min(len(lines), 200) + 1):
        try:
            node = ast.parse("\n".join(lines[:end])).body[0]
        except SyntaxError:
            continue
        try:
            value = ast.literal_eval(node.value)
        except (ValueError, AttributeError):
            return None
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        return None
    return None


def _check_columns(spec: PipelineSpec) -> list[str]:
    """Column names the gates name, against the feature model's real columns where they are known now:
    its enforced dbt contract in a fresh manifest (dbt refuses to build a table that differs from it).
    Otherwise the data gate checks them against the exported table at run time, naming the same field."""
    gates = spec.gates
    try:
        index: ManifestIndex | None = load_index(spec.path(spec.dbt.project_dir))
    except ManifestError:
        index = None
    if index is None:
        return []
    contract = model_contract(index, spec.dataset.feature_table.split(".")[-1])
    if contract.columns is None:
        return []
    named = [(f"gates.data.max_null_rate.columns.{c}", c) for c in gates.data.max_null_rate.columns]
    if gates.data.drift and gates.data.drift.columns:
        named += [(f"gates.data.drift.columns[{i}]", c) for i, c in enumerate(gates.data.drift.columns)]
    if gates.slices:
        named += [(f"gates.slices.columns[{i}]", c) for i, c in enumerate(gates.slices.columns)]
    return [
        f"{field_name}: unknown column {column!r} (not among the {len(contract.columns)} columns of the "
        f"enforced dbt contract of {spec.dataset.feature_table}, manifest fingerprint {index.fingerprint})"
        for field_name, column in named
        if column not in contract.columns
    ]


def _check_gates(spec: PipelineSpec) -> list[str]:
    """Gate fields checked against the dbt contract and the training script's declared metrics."""
    problems = []
    gates = spec.gates
    problems += _check_columns(spec)
    if gates.slices:
        for i, column in enumerate(gates.slices.columns):
            if column in (spec.dataset.target_column, spec.dataset.id_column):
                problems.append(f"gates.slices.columns[{i}]: {column!r} is the label or id column, not a feature")
    declared = declared_metrics(spec.path(spec.training.entry_point))
    metric_fields = [(f"gates.metrics.{m}", m) for m in gates.metrics]
    metric_fields.append(("registry.primary_metric", spec.registry.primary_metric))
    rescored = [("gates.champion.metric", spec.champion_metric)]
    if gates.slices:
        rescored.append(("gates.slices.metric", gates.slices.metric or spec.registry.primary_metric))
    if declared is not None:
        for field_name, metric in [*metric_fields, *rescored]:
            if metric not in declared:
                problems.append(
                    f"{field_name}: metric {metric!r} is never produced by {spec.training.entry_point} "
                    f"(it declares METRICS = {declared})"
                )
    for field_name, metric in rescored:
        if metric not in SCORABLE_METRICS:
            problems.append(
                f"{field_name}: metric {metric!r} cannot be re-scored by the model gates; "
                f"known: {', '.join(SCORABLE_METRICS)}"
            )
    return problems

