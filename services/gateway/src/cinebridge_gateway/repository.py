"""The gateway's repository: all of its SQL, one class for the routes (`Gateway.repo`) made of
one part per responsibility — accounts (users, sessions, tokens), the audit log, the study
catalog's reads, other services' read models.

Other services' data is read through the read models they publish (the sender's
`delivery_states`, the SCP's `received_study_index`), and only when they exist:
`Repository.has_table` checks once and remembers.
"""

from __future__ import annotations

from .accounts_repository import AccountsRepository, Principal
from .audit_repository import AuditFilter, AuditRepository
from .base_repository import Conn
from .catalog_repository import StudyReads
from .read_model_repository import ServiceReads, received_study

__all__ = ["AuditFilter", "Conn", "Principal", "Repository", "received_study"]


class Repository(AccountsRepository, AuditRepository, StudyReads, ServiceReads):
    """Every part on one pool."""
