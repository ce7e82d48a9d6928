"""A candidate's MLflow input signature, from its exported dataset's Parquet schema and null counts."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException


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
