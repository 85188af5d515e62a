from escalation.models.failures import Failure, FailureOccurrence, TimelineEntry, TimelineKind
from escalation.models.ingestion import CIEvent, CIJob, CIRun, IngestSource
from escalation.models.matrix import MatrixRow
from escalation.models.rules import ClassificationRule
from escalation.models.teams import Identity, OwnershipRule, Person, Repository, RoleDefaultTeam, Team

__all__ = [
    "CIEvent",
    "CIJob",
    "CIRun",
    "ClassificationRule",
    "Failure",
    "FailureOccurrence",
    "Identity",
    "IngestSource",
    "MatrixRow",
    "OwnershipRule",
    "Person",
    "Repository",
    "RoleDefaultTeam",
    "Team",
    "TimelineEntry",
    "TimelineKind",
]
