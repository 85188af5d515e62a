from escalation.models.failures import (
    Failure,
    FailureAwaitingTriage,
    FailureOccurrence,
    TimelineEntry,
    TimelineKind,
)
from escalation.models.fallout import Digest, Fallout, FalloutRule, RetryAdvice
from escalation.models.ingestion import CIEvent, CIJob, CIRun, IngestSource
from escalation.models.matrix import MatrixRow
from escalation.models.notifications import Notification, NotificationChannel, TicketTracker
from escalation.models.reports import (
    CredentialRotation,
    Finding,
    FlakyObservation,
    Report,
    RunFlag,
    TestResult,
    WebhookAlias,
    WebhookDelivery,
    WebhookRun,
)
from escalation.models.rules import ClassificationRule, ClassificationRuleVersion, RuleChange, RuleChangeEffect
from escalation.models.sla import ClockPause, EngineBeat, Escalation, FailureGroup
from escalation.models.teams import Identity, OwnershipRule, Person, Repository, RoleDefaultTeam, Team

__all__ = [
    "ClockPause",
    "EngineBeat",
    "Escalation",
    "FailureGroup",
    "Notification",
    "NotificationChannel",
    "TicketTracker",
    "CIEvent",
    "CIJob",
    "CIRun",
    "CredentialRotation",
    "ClassificationRule",
    "ClassificationRuleVersion",
    "Failure",
    "FailureAwaitingTriage",
    "FailureOccurrence",
    "Digest",
    "Fallout",
    "FalloutRule",
    "Finding",
    "FlakyObservation",
    "Identity",
    "IngestSource",
    "MatrixRow",
    "OwnershipRule",
    "Person",
    "Report",
    "RetryAdvice",
    "Repository",
    "RoleDefaultTeam",
    "RuleChange",
    "RuleChangeEffect",
    "RunFlag",
    "Team",
    "TestResult",
    "TimelineEntry",
    "TimelineKind",
    "WebhookAlias",
    "WebhookDelivery",
    "WebhookRun",
]
