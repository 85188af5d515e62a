"""Teams, people and who owns what."""

import datetime
from fnmatch import fnmatchcase

from django.conf import settings
from django.db import models

from escalation.choices import Role

DEFAULT_PROTECTED_BRANCHES = ["main", "master", "release/*"]


def default_protected_branches() -> list[str]:
    return list(DEFAULT_PROTECTED_BRANCHES)


def default_working_days() -> list[int]:
    return [0, 1, 2, 3, 4]


class Team(models.Model):
    """A team that owns failures: its channels, ticket project and calendar."""

    name = models.CharField(max_length=100, unique=True)
    slack_channel = models.CharField(max_length=100, blank=True)
    ticket_project = models.CharField(max_length=100, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    workday_start = models.TimeField(default=datetime.time(9, 0))
    workday_end = models.TimeField(default=datetime.time(17, 0))
    working_days = models.JSONField(default=default_working_days, help_text="0 = Monday ... 6 = Sunday")
    holidays = models.JSONField(default=list, blank=True, help_text="ISO dates, e.g. 2026-12-25")
    standup_at = models.TimeField(default=datetime.time(9, 30))

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Person(models.Model):
    """Someone who commits code or owns failures; matched to CI payloads through identities."""

    name = models.CharField(max_length=200)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="person"
    )
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="members")

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "people"

    def __str__(self) -> str:
        return self.name


class Identity(models.Model):
    """A commit e-mail or CI login that names a person in CI payloads (matched case-insensitively)."""

    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="identities")
    value = models.CharField(max_length=254, unique=True, help_text="Stored lower-case")

    class Meta:
        verbose_name_plural = "identities"

    def __str__(self) -> str:
        return self.value


class RoleDefaultTeam(models.Model):
    """The team a role routes to when no ownership rule matches."""

    role = models.CharField(max_length=32, choices=Role.choices, unique=True)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="default_for_roles")

    def __str__(self) -> str:
        return f"{self.get_role_display()} -> {self.team}"


class OwnershipRule(models.Model):
    """(repository pattern, optional path or component pattern, role) -> team. Lowest position wins."""

    position = models.PositiveIntegerField(default=100)
    repository_pattern = models.CharField(max_length=200, help_text="Glob, e.g. acme/* or acme/api")
    path_pattern = models.CharField(
        max_length=200, blank=True, help_text="Optional glob on changed files or the component"
    )
    role = models.CharField(max_length=32, choices=Role.choices)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="ownership_rules")

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        path = f" {self.path_pattern}" if self.path_pattern else ""
        return f"{self.repository_pattern}{path} {self.get_role_display()} -> {self.team}"


class Repository(models.Model):
    """A repository CI reports on, with its branch policy and owning team."""

    name = models.CharField(max_length=255, unique=True)
    default_branch = models.CharField(max_length=255, blank=True)
    protected_branches = models.JSONField(
        default=default_protected_branches, help_text="Globs; the default branch is always protected"
    )
    owning_team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="repositories")

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "repositories"

    def __str__(self) -> str:
        return self.name

    def is_protected(self, branch: str) -> bool:
        if self.default_branch and branch == self.default_branch:
            return True
        return any(fnmatchcase(branch, pattern) for pattern in self.protected_branches)
