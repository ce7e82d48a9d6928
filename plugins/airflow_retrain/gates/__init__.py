"""Gates decide whether a candidate may go on; each returns a :class:`~.base.Verdict`."""

from airflow_retrain.gates.base import Gate, Verdict

__all__ = ["Gate", "Verdict"]
