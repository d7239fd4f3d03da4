"""The app's models, one module per aggregate; re-exported here so that ``gdpr_requests.models`` names them all.

Business rules live in the services (``requests/services.py`` and each feature package), not here.
"""

from __future__ import annotations

from gdpr_requests.models.api import ApiKey, ApiScope, IdempotencyRecord
from gdpr_requests.models.approvals import DeletionApproval, RejectionGround, RequestRejection
from gdpr_requests.models.audit import ActorType, AuditChainHead, AuditEvent
from gdpr_requests.models.cohorts import CohortAction, CohortIdentity, CohortIntake, CohortMember, CohortSync
from gdpr_requests.models.identity import (
    CandidateState,
    IdentityCandidate,
    IdentityLookup,
    LookupStatus,
    ProfileLookupAccess,
    ProjectLookupState,
    QueryBudgetLock,
    QueryBudgetUse,
)
from gdpr_requests.models.mixpanel_tasks import (
    ApiCall,
    MixpanelTask,
    RateLimitSlot,
    TaskKind,
    TaskRequestLink,
    TaskState,
)
from gdpr_requests.models.outbox import StaffAlert, SubjectNotification
from gdpr_requests.models.projects import CredentialStatus, MixpanelProject, Residency
from gdpr_requests.models.requests import (
    Channel,
    DataSubjectRequest,
    DisclosureType,
    Regulation,
    RequestKind,
    RequestNote,
    SubjectExport,
)
from gdpr_requests.models.webhooks import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = [
    "ActorType",
    "ApiCall",
    "ApiKey",
    "ApiScope",
    "AuditChainHead",
    "AuditEvent",
    "CandidateState",
    "Channel",
    "CohortAction",
    "CohortIdentity",
    "CohortIntake",
    "CohortMember",
    "CohortSync",
    "CredentialStatus",
    "DataSubjectRequest",
    "DeletionApproval",
    "DeliveryStatus",
    "DisclosureType",
    "IdempotencyRecord",
    "IdentityCandidate",
    "IdentityLookup",
    "LookupStatus",
    "MixpanelProject",
    "MixpanelTask",
    "ProfileLookupAccess",
    "ProjectLookupState",
    "QueryBudgetLock",
    "QueryBudgetUse",
    "RateLimitSlot",
    "Regulation",
    "RejectionGround",
    "RequestKind",
    "RequestNote",
    "RequestRejection",
    "Residency",
    "StaffAlert",
    "SubjectExport",
    "SubjectNotification",
    "TaskKind",
    "TaskRequestLink",
    "TaskState",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
