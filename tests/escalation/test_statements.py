"""Rows stored as one JSON parameter each (services/statements.py) read back as the ORM wrote them."""

import datetime
import json
import uuid

import pytest
from django.db import connection
from django.forms.models import model_to_dict

from escalation.choices import FalloutCategory, FalloutScope
from escalation.models import Failure, FalloutRule, Notification, TestResult, TimelineEntry
from escalation.models.failures import TimelineKind
from escalation.services.statements import (
    JsonText,
    array_text,
    copy_types,
    insert_chain,
    insert_many,
    insert_values,
    next_ids,
    row_json,
    rows_locked,
    unsaved,
)
from tests.factories import report_failure

pytestmark = pytest.mark.django_db

AT = datetime.datetime(2026, 11, 24, 9, 30, 15, 123456, tzinfo=datetime.UTC)


def stored(obj):
    return model_to_dict(type(obj).objects.get(pk=obj.pk), fields=[f.name for f in obj._meta.concrete_fields])


def test_a_failure_copied_through_a_json_row_equals_the_orm_row(api):
    original = report_failure(api)
    copy = Failure.objects.get(pk=original.pk)
    copy.pk, copy.fingerprint, copy.status = None, "f" * 64, "resolved"
    copy.first_seen_at = copy.last_seen_at = AT  # microseconds survive
    copy.matrix_snapshot = {**copy.matrix_snapshot, "note": 'quotes " and \\ and ünïcode', "nested": [1, None, True]}
    copy.tags = ["rate_limited", "ünïcode"]
    (copy_id,) = insert_chain([("failure", copy, {}, "")])
    assert copy.pk == copy_id and not copy._state.adding
    expected = {**stored(original), "id": copy_id, "fingerprint": "f" * 64, "status": "resolved"}
    expected.update(first_seen_at=AT, last_seen_at=AT, matrix_snapshot=copy.matrix_snapshot, tags=copy.tags)
    assert stored(copy) == expected


def test_durations_and_nulls_are_stored_exactly():
    rule = FalloutRule(
        code="json-row",
        name="JSON row",
        pattern="p",
        category=FalloutCategory.PROCESS,
        owner_roles=["qa"],
        threshold=3,
        window=datetime.timedelta(days=2, seconds=3605, microseconds=7),
        scope=FalloutScope.GLOBAL,
    )
    insert_chain([("rule", rule, {}, "")])
    stored_rule = FalloutRule.objects.get(pk=rule.pk)
    assert stored_rule.window == datetime.timedelta(days=2, seconds=3605, microseconds=7)
    assert stored_rule.ratio_percent is None and stored_rule.owner_roles == ["qa"]


def test_uuids_and_datetimes_keep_every_digit_and_none_is_null():
    uid = uuid.uuid4()
    note = Notification(uid=uid, subject="s", body="b", next_attempt_at=AT, created_at=AT, dedupe_key=None)
    row = json.loads(row_json(note))
    assert "id" not in row  # the sequence gives it
    assert row["uid"] == str(uid) and row["dedupe_key"] is None
    assert datetime.datetime.fromisoformat(row["next_attempt_at"]) == AT


def test_a_value_json_cannot_hold_is_refused_by_name():
    rule = FalloutRule(code="x", name="x", pattern="p", category="process", threshold=1, window=object())
    with pytest.raises(TypeError, match="cannot store a object"):
        row_json(rule)


@pytest.mark.parametrize(
    ("values", "cast"),
    [
        ([1, -2, 9_223_372_036_854_775_807, None], "bigint[]"),
        (["plain", 'with "quotes"', "back\\slash", "{braces}, commas", " spaces ", "NULL", "", "ünï", None], "text[]"),
        ([AT, AT.astimezone(datetime.timezone(datetime.timedelta(hours=-5))), None], "timestamptz[]"),
        ([], "bigint[]"),
    ],
)
def test_array_text_reads_back_as_psycopg_adapts_the_list(values, cast):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT %s::{cast}, %s::{cast}", [array_text(values), values])
        ours, psycopgs = cursor.fetchone()
    assert ours == psycopgs == values


def test_array_text_refuses_what_it_cannot_write():
    with pytest.raises(TypeError, match="no array text for float"):
        array_text([1.5])


@pytest.mark.parametrize("model", [Failure, Notification, FalloutRule])
def test_unsaved_builds_the_row_model_init_builds(api, model):
    """The same attributes, the same cached related objects, the same adding state; defaults never shared."""
    failure = report_failure(api)
    values = {
        Failure: {"repository": failure.repository, "owner_team_id": failure.owner_team_id, "branch": "main"},
        Notification: {"subject": "s", "body": "b", "created_at": AT},
        FalloutRule: {"name": "n", "scope": FalloutScope.REPOSITORY, "category": FalloutCategory.INFRASTRUCTURE},
    }[model]
    built, expected = unsaved(model, **values), model(**values)
    # Callable defaults (uuid4, list, dict) are called for each row: equal in kind, lists and dicts never shared.
    computed = {f.attname for f in model._meta.concrete_fields if callable(f.default) and f.attname not in values}
    state, wanted = vars(built).copy(), vars(expected).copy()
    assert state.keys() == wanted.keys()
    assert {k: type(state[k]) for k in computed} == {k: type(wanted[k]) for k in computed}
    for name in ("_state", *computed):
        del state[name], wanted[name]
    assert state == wanted
    assert (built._state.adding, built._state.db) == (expected._state.adding, expected._state.db)
    assert built._state.fields_cache.keys() == expected._state.fields_cache.keys()
    other = unsaved(model, **values)
    mutable = [k for k in computed if isinstance(getattr(built, k), list | dict)]
    assert mutable and all(getattr(other, k) is not getattr(built, k) for k in mutable)


def test_insert_values_stores_json_text_as_it_is_and_encodes_the_rest(api):
    failure = report_failure(api)
    state = {"b": [1, "ü"], "a": None}
    rows = [(failure.pk, AT, "escalated", "task:t", "task", "m", JsonText(json.dumps(state))), (failure.pk, AT,
            "escalated", "task:t", "task", "m", state)]  # fmt: skip
    names = ["failure_id", "at", "kind", "actor", "source", "message", "data"]
    insert_values(TimelineEntry, names, rows)
    stored = TimelineEntry.objects.filter(failure=failure, kind="escalated").values_list("data", flat=True)
    assert list(stored) == [state, state]


def test_copy_types_name_each_column_by_its_postgresql_type_and_json_as_text():
    names = ["report_id", "test_key", "duration", "message"]
    assert copy_types(TestResult, names) == ["bigint", "varchar", "double precision", "text"]
    assert copy_types(TimelineEntry, ["failure_id", "at", "data"]) == ["bigint", "timestamp with time zone", "text"]


def test_a_copy_with_column_types_stores_every_kind_of_value(api):
    """copy_rows and insert_values give psycopg the columns' types: enums, None, JSON and times still go in."""
    failure = report_failure(api)
    entry = unsaved(TimelineEntry, failure=failure, at=AT, kind=TimelineKind.ESCALATED, actor="task:t", source="task",
                    message="m", data={"at": AT, "n": None})  # fmt: skip
    insert_many([entry], keys_needed=True)
    row = TimelineEntry.objects.get(pk=entry.pk)
    assert (row.at, row.kind, row.data) == (AT, "escalated", {"at": AT.isoformat(), "n": None})


def test_next_ids_take_distinct_values_of_the_sequence_that_later_rows_continue(api):
    failure = report_failure(api)
    ids = next_ids(TimelineEntry, 50)
    assert len(set(ids)) == 50 and next_ids(TimelineEntry, 0) == []
    later = TimelineEntry.objects.create(failure=failure, at=AT, kind=TimelineKind.ESCALATED, actor="t", source="task")
    assert later.pk > max(ids)


def test_rows_locked_load_every_field_as_the_orm_does(api):
    first = report_failure(api)
    second = report_failure(api, job="another job")
    tags = ["ünïcode", 'q"uote']
    Failure.objects.filter(pk=second.pk).update(tags=tags, triage_due_at=AT, is_protected_branch=False)
    loaded = rows_locked(Failure, "job_name IN (%s, %s)", [first.job_name, second.job_name])
    assert [f.pk for f in loaded] == sorted([first.pk, second.pk])
    for row in loaded:
        assert not row._state.adding
        assert stored(row) == model_to_dict(row, fields=[f.name for f in Failure._meta.concrete_fields])
    assert loaded[1].tags == tags and loaded[1].triage_due_at == AT
    assert rows_locked(Failure, "job_name = %s", ["no such job"]) == []
