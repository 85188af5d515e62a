"""The routing configuration (rules, matrix, ownership, branch policy), cached per process.

Ingestion reads it on every event; loading it from the database each time would cost more than
the rest of the event. Edits through the services call ``config_changed()``; other processes
see an edit after PORTAL_CONFIG_CACHE_SECONDS at the latest.
"""

import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.forms.models import model_to_dict

from escalation.models import (
    ClassificationRule,
    Identity,
    MatrixRow,
    OwnershipRule,
    Person,
    Repository,
    RoleDefaultTeam,
    Team,
)
from escalation.services.rule_engine import RuleEngine, RuleSpec, engine_for


@dataclass
class RoutingConfig:
    rules: RuleEngine
    matrix: dict[str, MatrixRow]
    role_teams: dict[str, int]
    ownership: list[OwnershipRule]
    teams: dict[int, Team]
    loaded_at: float
    repositories: dict[str, Repository] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)  # by identity value (stored lower-case)
    snapshots: dict[str, dict] = field(default_factory=dict)  # by failure type, see snapshot()

    def snapshot(self, failure_type: str) -> dict:
        """The matrix row of this type as a failure freezes it (``matrix_snapshot``), worked out once
        per configuration; each call returns a copy of its own."""
        if failure_type not in self.snapshots:
            self.snapshots[failure_type] = _matrix_snapshot(self.matrix[failure_type])
        return dict(self.snapshots[failure_type])

    def person_for(self, commit_author: str) -> Person | None:
        """routing.person_for_author without a query: the person one of whose identities is this author."""
        if not commit_author:
            return None
        return self.people.get(commit_author.strip().lower())


def _matrix_snapshot(row: MatrixRow) -> dict:
    """The matrix row frozen into a failure: JSON-safe, durations in seconds."""
    data = model_to_dict(row, exclude=["id"])
    for key in ("sla_budget", "complex_sla_budget", "acknowledge_budget"):
        data[key] = data[key].total_seconds() if data[key] is not None else None
    return data


_lock = threading.Lock()
_config: RoutingConfig | None = None


def rules_engine() -> RuleEngine:
    """The enabled rules compiled into one engine; unchanged rules reuse the compiled engine."""
    rules = ClassificationRule.objects.filter(is_enabled=True).order_by("stage", "position", "id")
    return engine_for(tuple(RuleSpec.of(rule) for rule in rules))


def routing_config() -> RoutingConfig:
    global _config
    ttl = settings.PORTAL_CONFIG_CACHE_SECONDS
    current = _config
    if current is not None and ttl > 0 and time.monotonic() - current.loaded_at < ttl:
        return current
    loaded = _load()
    with _lock:
        _config = loaded
    return loaded


def config_changed() -> None:
    global _config
    with _lock:
        _config = None


def _load() -> RoutingConfig:
    return RoutingConfig(
        rules=rules_engine(),
        matrix={row.failure_type: row for row in MatrixRow.objects.all()},
        role_teams=dict(RoleDefaultTeam.objects.values_list("role", "team_id")),
        ownership=list(OwnershipRule.objects.order_by("position", "id")),
        teams=Team.objects.in_bulk(),
        loaded_at=time.monotonic(),
        people={identity.value: identity.person for identity in Identity.objects.select_related("person")},
    )
