"""The registry operators, one module per job; this module only re-exports them for existing imports.

- :mod:`.registry_register`: :class:`RegisterModelOperator` (every candidate becomes ``challenger``);
- :mod:`.registry_promote`: :class:`PromoteModelOperator` (``champion`` moves only to a gated winner);
- :mod:`.registry_approval`: :class:`PromotionApprovalOperator` (a human decides);
- :mod:`.registry_rollback`: :class:`RollbackModelOperator`;
- :mod:`.registry_mirror`: :class:`MirrorToSageMakerOperator`.

The lease and the promotion history live in :mod:`airflow_retrain.registry`.
"""

from airflow_retrain.operators.registry_approval import PromotionApprovalOperator, approval_body
from airflow_retrain.operators.registry_mirror import MirrorToSageMakerOperator
from airflow_retrain.operators.registry_promote import PromoteModelOperator
from airflow_retrain.operators.registry_register import RegisterModelOperator
from airflow_retrain.operators.registry_rollback import RollbackModelOperator
from airflow_retrain.registry.signature import signature_from_parquet
from airflow_retrain.registry.tags import CHALLENGER, CHAMPION, GATE_OUTCOME_TAG, GATE_TAG

__all__ = [
    "CHALLENGER", "CHAMPION", "GATE_OUTCOME_TAG", "GATE_TAG", "MirrorToSageMakerOperator", "PromoteModelOperator",
    "PromotionApprovalOperator", "RegisterModelOperator", "RollbackModelOperator", "approval_body",
    "signature_from_parquet",
]
