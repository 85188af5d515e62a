"""The audit log's helpers: row_state as a JSON round trip of model_to_dict, audit_values as audit_entry's columns."""

import datetime
import json
from decimal import Decimal

from django.contrib.contenttypes.models import ContentType
from django.core.serializers.json import DjangoJSONEncoder
from django.forms.models import model_to_dict

from escalation.choices import ChangeSource, FailureStatus, FailureType
from escalation.models import Failure, IngestSource, Team
from portal.audit import SECRET_FIELDS, Actor, audit_entry, audit_values, row_state, row_state_json
from portal.models import AuditAction, AuditEntry
from tests.factories import UserFactory


def reference_state(obj) -> dict:
    """How row_state was first written: every editable concrete field but the secrets, through JSON."""
    fields = [f.name for f in obj._meta.concrete_fields if f.name not in SECRET_FIELDS]
    return json.loads(json.dumps(model_to_dict(obj, fields=fields), cls=DjangoJSONEncoder))


def test_row_state_of_a_failure_is_its_json_round_trip():
    at = datetime.datetime(2026, 3, 4, 10, 11, 12, 345678, tzinfo=datetime.UTC)
    failure = Failure(
        pk=7,
        failure_type=FailureType.UNIT_TEST,
        fingerprint="f" * 64,
        repository_id=3,
        branch="main",
        job_name="unit › test_x",
        is_protected_branch=True,
        status=FailureStatus.OPEN,
        first_seen_at=at,
        last_seen_at=at.replace(microsecond=0),
        sla_due_at=at.astimezone(datetime.timezone(datetime.timedelta(hours=2))),
        resolution_plan_due=datetime.date(2026, 3, 5),
        matrix_snapshot={"tier": "standard", "sla_budget": 14400.0, "nested": {1: ("a", 2)}, "n": None},
        tags=["rate_limited", ("x", Decimal("1.5"))],
        owner_team_id=9,
    )
    state = row_state(failure)
    assert state == reference_state(failure)
    assert list(state) == list(reference_state(failure))
    assert type(state["status"]) is str and type(state["failure_type"]) is str
    assert json.loads(row_state_json(failure)) == state


def test_row_state_json_is_row_state_as_text():
    team = Team(pk=2, name="Platform", holidays=["2026-12-25"], standup_at=datetime.time(9, 30, 15, 250))
    source = IngestSource(pk=1, name="ci", token_prefix="abc", token_hash="h", webhook_secret="s", scopes=["ingest"])
    for obj in (team, source):
        assert json.loads(row_state_json(obj)) == row_state(obj)
    assert "token_hash" not in row_state_json(source)


def test_row_state_of_a_team_turns_times_into_text():
    team = Team(pk=2, name="Platform", holidays=["2026-12-25"], standup_at=datetime.time(9, 30, 15, 250))
    assert row_state(team) == reference_state(team)


def test_row_state_leaves_the_secrets_and_the_fields_that_are_not_editable_out():
    source = IngestSource(pk=1, name="ci", token_prefix="abc", token_hash="h", webhook_secret="s", scopes=["ingest"])
    state = row_state(source)
    assert state == reference_state(source)
    assert not {"token_hash", "webhook_secret", "token_prefix"} & set(state)


def test_audit_values_are_the_columns_of_the_audit_entry(db):
    user = UserFactory(username="lead")
    team = Team(pk=2, name="Platform")
    at = datetime.datetime(2026, 3, 4, 10, 11, 12, tzinfo=datetime.UTC)
    for actor in (Actor.task("sweep"), Actor.of_user(user, ChangeSource.ADMIN)):
        change = {"actor": actor, "action": AuditAction.UPDATE, "obj": team, "at": at, "after": {"name": "P"}}
        entry = audit_entry(**change, before={"name": "Q"}, reason="renamed " * 60)
        columns = {f.attname: getattr(entry, f.attname) for f in AuditEntry._meta.concrete_fields if not f.primary_key}
        assert audit_values(**change, before={"name": "Q"}, reason="renamed " * 60) == columns
        assert columns == {
            "at": at,
            "actor_id": None if actor.user is None else user.pk,
            "actor_label": actor.label,
            "source": actor.source,
            "action": AuditAction.UPDATE,
            "content_type_id": ContentType.objects.get_for_model(Team).pk,
            "object_id": "2",
            "object_repr": "Platform",
            "before": {"name": "Q"},
            "after": {"name": "P"},
            "reason": ("renamed " * 60)[:300],
        }
