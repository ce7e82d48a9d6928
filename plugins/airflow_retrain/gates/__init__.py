"""Gates decide whether a candidate may go on; each returns a :class:`~.base.Verdict`."""

from airflow_retrain.gates.base import Check, Gate, Verdict, evidence_table

__all__ = ["Check", "Gate", "Verdict", "evidence_table"]
