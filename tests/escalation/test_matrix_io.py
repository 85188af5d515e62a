import copy
import json
from datetime import timedelta
from io import StringIO

import pytest
import yaml
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from escalation.choices import ChangeSource, FailureType
from escalation.models import Failure, MatrixRow
from escalation.services.matrix import (
    MatrixImportResult,
    duration_format,
    duration_parse,
    matrix_export,
    matrix_import,
)
from portal.audit import Actor
from portal.models import AuditAction, AuditEntry

pytestmark = pytest.mark.django_db

COLUMNS = [f.name for f in MatrixRow._meta.concrete_fields if not f.primary_key]

RUNNER_LOST = "The runner has received a shutdown signal. This can happen when the runner service is stopped."


def matrix_audit():
    return AuditEntry.objects.filter(content_type=ContentType.objects.get_for_model(MatrixRow))


def write(tmp_path, rows, name="matrix.yaml"):
    path = tmp_path / name
    text = json.dumps(rows) if name.endswith(".json") else yaml.safe_dump(rows, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def import_file(path, *args):
    out = StringIO()
    call_command("import_matrix", str(path), *args, stdout=out)
    return out.getvalue()


def row_of(rows, failure_type):
    return next(row for row in rows if row["failure_type"] == failure_type)


def post_runner_failure(api, *, job, run_id):
    event = {
        "source": "github-actions",
        "repository": "acme/shop",
        "branch": "main",
        "commit": "9f1c2e7",
        "commit_author": "dev@example.com",
        "run_id": run_id,
        "attempt": 1,
        "job": job,
        "status": "failure",
        "log_excerpt": RUNNER_LOST,
    }
    response = api.post("/api/v1/events/", event, content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["type"] == FailureType.CI_RUNNER
    return Failure.objects.get(pk=response.json()["id"])


# --- durations ---


@pytest.mark.parametrize(
    "text, value",
    [
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ],
)
def test_a_duration_reads_and_writes_as_the_same_short_text(text, value):
    assert duration_parse(text) == value
    assert duration_format(value) == text


@pytest.mark.parametrize("text", ["", "soon", "30", "-30m", "1.5h", "30m2h", "h"])
def test_text_that_is_not_a_duration_reads_as_none(text):
    assert duration_parse(text) is None


# --- export ---


def test_export_lists_every_failure_type_in_the_designs_order_with_every_column():
    rows = matrix_export()
    assert [row["failure_type"] for row in rows] == FailureType.values
    assert all(list(row) == COLUMNS for row in rows)


@pytest.mark.parametrize(
    "failure_type, expected",
    [
        ("ci_runner", {"sla_budget": "30m", "tier": "immediate", "retries": 3, "complex_sla_budget": None}),
        ("database_test", {"sla_budget": "4h", "complex_sla_budget": "8h", "tier": "standard"}),
        ("vulnerability_medium", {"sla_budget": "7d", "override_policy": "with_approval"}),
        ("vulnerability_critical", {"sla_budget": "1d", "acknowledge_budget": "1h", "approver_role": None}),
        ("secret_detected", {"sla_budget": "1h", "opens_rotation_task": True, "override_policy": "never"}),
        (
            "performance_regression",
            {"tier": "investigation", "raised_tier": "standard", "raised_tier_above_percent": 20},
        ),
        ("database_connectivity", {"retries": 2, "retry_condition": "other_jobs_succeed"}),
        ("unit_test", {"primary_owner": "code_author", "approver_role": "technical_architect"}),
    ],
)
def test_export_holds_the_designs_values(failure_type, expected):
    row = row_of(matrix_export(), failure_type)
    assert {key: row[key] for key in expected} == expected


@pytest.mark.parametrize("file_format, load", [("yaml", yaml.safe_load), ("json", json.loads)])
def test_export_command_prints_the_matrix_in_the_chosen_format(file_format, load):
    out = StringIO()
    call_command("export_matrix", "--format", file_format, stdout=out)
    assert load(out.getvalue()) == matrix_export()


def test_export_command_writes_json_to_a_json_output_file(tmp_path):
    path = tmp_path / "matrix.json"
    call_command("export_matrix", "--output", str(path), stderr=StringIO())
    assert json.loads(path.read_text()) == matrix_export()


# --- import ---


@pytest.mark.parametrize("name", ["matrix.yaml", "matrix.yml", "matrix.json"])
def test_an_exported_file_imports_back_without_changing_anything(tmp_path, name):
    path = tmp_path / name
    call_command("export_matrix", "--output", str(path), stderr=StringIO())
    before = matrix_export()
    output = import_file(path)
    assert "0 created, 0 updated, 14 unchanged" in output
    assert matrix_export() == before
    assert not matrix_audit().exists()


def test_importing_the_export_counts_every_row_unchanged():
    result = matrix_import(rows=matrix_export(), actor=Actor.task("test"), now=timezone.now())
    assert result == MatrixImportResult(created=0, updated=0, unchanged=14)


def test_an_edited_sla_updates_only_that_row_with_one_audit_entry(tmp_path):
    before = matrix_export()
    edited = copy.deepcopy(before)
    row_of(edited, "ci_runner")["sla_budget"] = "1h"
    output = import_file(write(tmp_path, edited))
    assert "0 created, 1 updated, 13 unchanged" in output
    assert MatrixRow.objects.get(failure_type="ci_runner").sla_budget == timedelta(hours=1)
    assert matrix_export() == edited
    entry = matrix_audit().get()
    assert (entry.action, entry.source, entry.actor_label) == (
        AuditAction.UPDATE,
        ChangeSource.COMMAND,
        "command:import_matrix",
    )
    assert entry.object_repr == "CI runner"
    assert entry.before["sla_budget"] != entry.after["sla_budget"]
    assert {k for k in entry.after if entry.before[k] != entry.after[k]} == {"sla_budget"}


def test_a_new_failure_gets_the_imported_sla_while_an_older_one_keeps_its_snapshot(api, tmp_path):
    older = post_runner_failure(api, job="deploy", run_id="2001")
    edited = matrix_export()
    row_of(edited, "ci_runner")["sla_budget"] = "1h"
    import_file(write(tmp_path, edited))
    newer = post_runner_failure(api, job="build-image", run_id="2002")
    older.refresh_from_db()
    assert older.matrix_snapshot["sla_budget"] == 30 * 60
    assert newer.matrix_snapshot["sla_budget"] == 60 * 60
    assert newer.sla_due_at - newer.first_seen_at == timedelta(hours=1)


def test_a_row_missing_from_the_database_is_created_with_a_create_audit_entry(tmp_path):
    exported = matrix_export()
    MatrixRow.objects.filter(failure_type="auth_change").delete()
    output = import_file(write(tmp_path, exported))
    assert "1 created, 0 updated, 13 unchanged" in output
    assert matrix_export() == exported
    assert matrix_audit().get().action == AuditAction.CREATE


def test_a_left_out_optional_column_takes_its_empty_value(tmp_path):
    rows = matrix_export()
    del row_of(rows, "database_test")["complex_sla_budget"]
    import_file(write(tmp_path, rows))
    assert MatrixRow.objects.get(failure_type="database_test").complex_sla_budget is None


def test_the_format_option_overrides_the_extension(tmp_path):
    rows = matrix_export()
    row_of(rows, "ci_runner")["sla_budget"] = "45m"
    path = tmp_path / "matrix.txt"
    path.write_text(json.dumps(rows))
    import_file(path, "--format", "json")
    assert MatrixRow.objects.get(failure_type="ci_runner").sla_budget == timedelta(minutes=45)


# --- bad files ---


def edit(failure_type, change):
    """A full export with a valid edit (ci_runner's SLA) and ``change`` applied to one row."""

    def build(rows):
        row_of(rows, "ci_runner")["sla_budget"] = "1h"
        change(row_of(rows, failure_type))
        return rows

    return build


def text_file(text):
    return lambda rows: text


BAD_FILES = {
    "not YAML": (
        "matrix.yaml",
        text_file("- failure_type: ci_runner\n  sla_budget: [30m\n"),
        "not valid YAML",
    ),
    "not JSON": ("matrix.json", text_file('[{"failure_type": "ci_runner",'), "not valid JSON"),
    "empty file": ("matrix.yaml", text_file(""), "must be a list of matrix rows, not an empty document"),
    "not a list": ("matrix.yaml", text_file("failure_type: ci_runner\n"), "must be a list of matrix rows"),
    "row not a mapping": ("matrix.yaml", lambda rows: [*rows, "ci_runner"], "row 15: must be a mapping"),
    "unknown failure type": (
        "matrix.yaml",
        edit("unit_test", lambda row: row.update(failure_type="unit_tests")),
        "row 2 (unit_tests): failure_type: 'unit_tests' is not one of",
    ),
    "duplicate failure type": (
        "matrix.yaml",
        lambda rows: [*rows, dict(row_of(rows, "unit_test"), sla_budget="1h")],
        "row 15 (unit_test): failure_type: duplicate 'unit_test'",
    ),
    "unknown key": (
        "matrix.yaml",
        edit("unit_test", lambda row: row.update(sla="1h")),
        "row 2 (unit_test): unknown key 'sla'",
    ),
    "missing required key": (
        "matrix.yaml",
        edit("unit_test", lambda row: row.pop("tier")),
        "row 2 (unit_test): tier: missing",
    ),
    "required value null": (
        "matrix.json",
        edit("unit_test", lambda row: row.update(primary_owner=None)),
        "row 2 (unit_test): primary_owner: must have a value",
    ),
    "bad owner": (
        "matrix.yaml",
        edit("unit_test", lambda row: row.update(primary_owner="everyone")),
        "primary_owner: 'everyone' is not one of",
    ),
    "bad tier": ("matrix.yaml", edit("unit_test", lambda row: row.update(tier="urgent")), "tier: 'urgent'"),
    "bad override policy": (
        "matrix.yaml",
        edit("unit_test", lambda row: row.update(override_policy="sometimes")),
        "override_policy: 'sometimes' is not one of",
    ),
    "bad approver role": (
        "matrix.yaml",
        edit("unit_test", lambda row: row.update(approver_role="ceo")),
        "approver_role: 'ceo' is not one of",
    ),
    "bad retry condition": (
        "matrix.yaml",
        edit("unit_test", lambda row: row.update(retry_condition="when_lucky")),
        "retry_condition: 'when_lucky' is not one of",
    ),
    "bad calendar": (
        "matrix.yaml",
        edit("unit_test", lambda row: row.update(calendar="weekdays")),
        "calendar: 'weekdays' is not one of",
    ),
    "bad duration": (
        "matrix.yaml",
        edit("unit_test", lambda row: row.update(sla_budget="soon")),
        "sla_budget: 'soon' is not a duration",
    ),
    "duration as a bare number": (
        "matrix.json",
        edit("unit_test", lambda row: row.update(sla_budget=3600)),
        "sla_budget: 3600 is not a duration",
    ),
    "zero duration": (
        "matrix.yaml",
        edit("database_test", lambda row: row.update(complex_sla_budget="0m")),
        "row 4 (database_test): complex_sla_budget: '0m' must be longer than zero",
    ),
    "negative number": (
        "matrix.yaml",
        edit("unit_test", lambda row: row.update(retries=-1)),
        "retries: -1 is negative",
    ),
    "number as text": (
        "matrix.yaml",
        edit("unit_test", lambda row: row.update(retry_backoff_seconds="30")),
        "retry_backoff_seconds: '30' is not a whole number",
    ),
    "number over the column's limit": (
        "matrix.yaml",
        edit("unit_test", lambda row: row.update(override_threshold_percent=40000)),
        "override_threshold_percent: Ensure this value is less than or equal to 32767",
    ),
    "bad boolean": (
        "matrix.json",
        edit("unit_test", lambda row: row.update(opens_rotation_task="no")),
        "opens_rotation_task: 'no' is not true or false",
    ),
    "text too long": (
        "matrix.yaml",
        edit("unit_test", lambda row: row.update(comes_from="x" * 201)),
        "comes_from: Ensure this value has at most 200 characters",
    ),
}


@pytest.mark.parametrize("name, build, message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_refused_with_its_problem_named_and_nothing_changed(tmp_path, name, build, message):
    before = matrix_export()
    content = build(copy.deepcopy(before))
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        write(tmp_path, content, name)
    with pytest.raises(CommandError) as refused:
        import_file(path)
    assert message in str(refused.value)
    assert matrix_export() == before
    assert not matrix_audit().exists()


def test_every_problem_of_a_file_is_listed_at_once(tmp_path):
    rows = matrix_export()
    row_of(rows, "unit_test")["tier"] = "urgent"
    row_of(rows, "ci_runner")["sla_budget"] = "soon"
    row_of(rows, "ci_runner")["retries"] = -3
    del row_of(rows, "auth_change")["override_policy"]
    with pytest.raises(CommandError) as refused:
        import_file(write(tmp_path, rows))
    message = str(refused.value)
    assert "4 problems" in message
    assert "row 2 (unit_test): tier: 'urgent'" in message
    assert "row 9 (ci_runner): sla_budget: 'soon'" in message
    assert "row 9 (ci_runner): retries: -3 is negative" in message
    assert "row 14 (auth_change): override_policy: missing" in message


def test_a_missing_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(CommandError, match="cannot read .*nowhere.yaml"):
        import_file(path)
    assert not matrix_audit().exists()
