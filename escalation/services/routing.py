"""Routing: from a matrix row's owners to teams and a person, for one repository and commit."""

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from escalation.choices import PERSON_OWNERS, Owner, Role
from escalation.models import Person, Repository
from escalation.services.config import RoutingConfig

# Where a failure goes when neither a person nor the repository names an owner.
LAST_RESORT_ROLE = Role.SENIOR_DEV_TRIAGE


@dataclass(frozen=True)
class Routing:
    owner_team_id: int | None
    secondary_team_id: int | None
    assignee: Person | None


def person_for_author(commit_author: str) -> Person | None:
    if not commit_author:
        return None
    return Person.objects.filter(identities__value=commit_author.strip().lower()).first()


def failure_route(
    *,
    config: RoutingConfig,
    snapshot: dict,
    repository: Repository,
    commit_author: str,
    changed_files: list[str] | None,
    component: str,
    person_of: Callable[[str], Person | None] = person_for_author,
) -> Routing:
    """Turn the snapshot's primary and secondary owners into teams; a code author also becomes assignee.

    ``person_of`` finds the person of a commit author; callers routing many failures pass a memo of it.
    """
    needs_person = {snapshot["primary_owner"], snapshot["secondary_owner"]} & PERSON_OWNERS
    person = person_of(commit_author) if needs_person else None
    paths = list(changed_files or []) + ([component] if component else [])

    def team_for(owner: str) -> int | None:
        if owner in PERSON_OWNERS:
            if person is not None and person.team_id is not None:
                return person.team_id
            return _repository_team(config, repository, paths)
        if owner == Owner.COMPONENT_OWNER:
            return _repository_team(config, repository, paths)
        return role_team(config=config, role=owner, repository=repository.name, paths=paths)

    return Routing(
        owner_team_id=team_for(snapshot["primary_owner"]),
        secondary_team_id=team_for(snapshot["secondary_owner"]),
        assignee=person,
    )


def role_team(*, config: RoutingConfig, role: str, repository: str, paths: list[str]) -> int | None:
    """The first ownership rule for this role and repository (and path, if it names one), else the default."""
    for rule in config.ownership:
        if rule.role != role or not fnmatchcase(repository, rule.repository_pattern):
            continue
        if rule.path_pattern and not any(fnmatchcase(p, rule.path_pattern) for p in paths):
            continue
        return rule.team_id
    return config.role_teams.get(role)


def _repository_team(config: RoutingConfig, repository: Repository, paths: list[str]) -> int | None:
    if repository.owning_team_id is not None:
        return repository.owning_team_id
    return role_team(config=config, role=LAST_RESORT_ROLE, repository=repository.name, paths=paths)
