"""The dbt stage: manifest cache, selection, task-group rendering and results as evidence.

Everything imported at DAG-parse time (:mod:`.manifest`, :mod:`.selection`, :mod:`.render`) is pure Python
over JSON: dbt itself (``dbt build``, and ``dbt ls`` for dbt's own selection, :mod:`.dbt_ls`) is only ever
run by tasks (the ``dbt_build`` producer) or by the CLI (``python -m airflow_retrain.dbt manifest``), never
while a DAG file is parsed.
"""
