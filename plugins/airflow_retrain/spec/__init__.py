"""PipelineSpec: one validated YAML file per model under ``include/pipelines/``.

The spec is the only place a pipeline is configured, and a broken spec never stops the other specs from
loading (:func:`load_specs` returns errors per file). Validation errors name the file and the field
(``training.backend``). The package, bottom to top:

- :mod:`.fields`: value rules shared by the models (text, bucket names, image references, schedules);
- :mod:`.training` and :mod:`.models`: the pydantic models and their validators, nothing else;
- :mod:`.checks`: the one place a valid spec is checked against the dbt project, the cloud catalogs and
  prices, and the training script;
- :mod:`.loader`: YAML files into specs (unique keys, no NUL bytes, one registered model per spec).

Paths and ``[retrain]`` options live in :mod:`airflow_retrain.config`; they are re-exported here, with
the public names of every module above, so ``from airflow_retrain.spec import X`` keeps working. Modules of
the package import from the precise module instead.
"""

from airflow_retrain.config import (
    EMBEDDED_WAREHOUSE_POOL,
    project_root_for,
    retrain_home,
    state_dir,
)
from airflow_retrain.dbt.contracts import dbt_model_names, project_contract
from airflow_retrain.spec.checks import check_spec, declared_metrics
from airflow_retrain.spec.fields import (
    ARTIFACT_SCHEMES,
    RESERVED_HYPERPARAMETERS,
    SCHEDULE_PRESETS,
    TAG_MAX_LENGTH,
    FiniteFloat,
    artifact_root_problems,
    gcs_bucket_problem,
    s3_bucket_problem,
    validate_schedule,
)
from airflow_retrain.spec.loader import (
    LoadedSpecs,
    _format_validation_error,
    format_validation_error,
    load_spec,
    load_specs,
    spec_files,
)
from airflow_retrain.spec.models import (
    ApprovalSpec,
    ArtifactsSpec,
    AssetSchedule,
    BudgetSpec,
    ChampionGateSpec,
    DataGateSpec,
    DatasetSpec,
    DbtSpec,
    DriftSpec,
    EfficiencyGateSpec,
    GatesSpec,
    LeaseSpec,
    MirrorSpec,
    NullRateSpec,
    PipelineSpec,
    RateBand,
    RegistrySpec,
    SageMakerMirrorSpec,
    SchemaGateSpec,
    SliceGateSpec,
    SpecError,
    Threshold,
)
from airflow_retrain.spec.training import ResourcesSpec, SageMakerSpec, TrainingSpec, VertexSpec

__all__ = [
    "ARTIFACT_SCHEMES",
    "EMBEDDED_WAREHOUSE_POOL",
    "RESERVED_HYPERPARAMETERS",
    "SCHEDULE_PRESETS",
    "TAG_MAX_LENGTH",
    "ApprovalSpec",
    "ArtifactsSpec",
    "AssetSchedule",
    "BudgetSpec",
    "ChampionGateSpec",
    "DataGateSpec",
    "DatasetSpec",
    "DbtSpec",
    "DriftSpec",
    "EfficiencyGateSpec",
    "FiniteFloat",
    "GatesSpec",
    "LeaseSpec",
    "LoadedSpecs",
    "MirrorSpec",
    "NullRateSpec",
    "PipelineSpec",
    "RateBand",
    "RegistrySpec",
    "ResourcesSpec",
    "SageMakerMirrorSpec",
    "SageMakerSpec",
    "SchemaGateSpec",
    "SliceGateSpec",
    "SpecError",
    "Threshold",
    "TrainingSpec",
    "VertexSpec",
    "_format_validation_error",
    "artifact_root_problems",
    "check_spec",
    "project_contract",
    "dbt_model_names",
    "declared_metrics",
    "format_validation_error",
    "gcs_bucket_problem",
    "load_spec",
    "load_specs",
    "project_root_for",
    "retrain_home",
    "s3_bucket_problem",
    "spec_files",
    "state_dir",
    "validate_schedule",
]
