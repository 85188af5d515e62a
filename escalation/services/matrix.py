"""The escalation matrix as a file: export every row, import a whole file or nothing.

A file is a list of rows, one mapping per failure type, keyed by the columns of ``MatrixRow``. Durations
are written "30m", "2h", "7d", "1h30m"; an empty column is null. An import checks the whole file before it
writes anything, so one bad value changes nothing and the error lists every problem at once. A column left
out of a row gets its empty value (null, blank or the column's default); the required columns must be there.
Rows of the database that the file does not name are left alone.
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

import yaml
from django.core.exceptions import ValidationError
from django.db import models, transaction

from escalation.choices import FailureType
from escalation.exceptions import InvalidMatrixFile
from escalation.models import MatrixRow
from escalation.services.config import config_changed
from portal.audit import Actor, audit_bulk, row_state
from portal.models import AuditAction

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_DURATION = re.compile(r"(?:(\d{1,6})d)?\s*(?:(\d{1,6})h)?\s*(?:(\d{1,6})m)?\s*(?:(\d{1,6})s)?")
_DURATION_HINT = "a duration like 30m, 2h, 7d or 1h30m"
_DESIGN_ORDER = {value: position for position, value in enumerate(FailureType.values)}


class MatrixFileFormat(models.TextChoices):
    YAML = "yaml", "YAML"
    JSON = "json", "JSON"


@dataclass(frozen=True)
class MatrixImportResult:
    created: int
    updated: int
    unchanged: int


def duration_format(value: timedelta) -> str:
    """``timedelta(hours=1, minutes=30)`` -> ``"1h30m"``; whole seconds only."""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def duration_parse(text: str) -> timedelta | None:
    """``"1h30m"`` -> ``timedelta(hours=1, minutes=30)``; None when the text is not a duration."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or not any(match.groups()):
        return None
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def matrix_export() -> list[dict[str, Any]]:
    """Every matrix row as a plain dict, every column, in the design's order of failure types."""
    rows = sorted(MatrixRow.objects.all(), key=_design_position)
    return [_row_export(row) for row in rows]


def matrix_import(*, rows: list[dict], actor: Actor, now: datetime) -> MatrixImportResult:
    """Validate the whole file, then upsert its rows in one transaction, one audit entry per changed row."""
    cleaned = matrix_rows_validate(rows=rows)
    with transaction.atomic():
        result = _upsert(cleaned, actor=actor, now=now)
    config_changed()
    return result


def matrix_rows_validate(*, rows: Any) -> list[dict[str, Any]]:
    """The clean column values of every row, or InvalidMatrixFile listing every problem in the file."""
    if not isinstance(rows, list):
        _refuse([f"the file must be a list of matrix rows, not {_kind(rows)}"])
    problems: list[str] = []
    cleaned: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, row in enumerate(rows, start=1):
        values, row_problems = _row_clean(row)
        failure_type = values.get("failure_type")
        if failure_type is not None and failure_type in seen:
            row_problems.append(f"failure_type: duplicate {failure_type!r}, already named by an earlier row")
        seen.add(failure_type)
        problems += [f"{_row_label(index, row)}: {problem}" for problem in row_problems]
        cleaned.append(values)
    if problems:
        _refuse(problems)
    return cleaned


def matrix_file_dump(*, rows: list[dict[str, Any]], file_format: MatrixFileFormat) -> str:
    if file_format == MatrixFileFormat.JSON:
        return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(rows, sort_keys=False, allow_unicode=True)


def matrix_file_load(*, text: str, file_format: MatrixFileFormat) -> Any:
    """Parse a matrix file. A malformed one is InvalidMatrixFile quoting the parser's complaint."""
    try:
        if file_format == MatrixFileFormat.JSON:
            return json.loads(text)
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:  # json.JSONDecodeError is a ValueError
        detail = f"the file is not valid {file_format.label}: {exc}"
        raise InvalidMatrixFile(detail, problems=[str(exc)]) from exc


def matrix_file_format_guess(*, path: str) -> MatrixFileFormat:
    """JSON for a ``.json`` file; YAML otherwise (a YAML parser also reads most JSON)."""
    return MatrixFileFormat.JSON if path.lower().endswith(".json") else MatrixFileFormat.YAML


def _columns() -> list[models.Field]:
    return [field for field in MatrixRow._meta.concrete_fields if not field.primary_key]


def _design_position(row: MatrixRow) -> int:
    return _DESIGN_ORDER.get(row.failure_type, len(_DESIGN_ORDER))


def _row_export(row: MatrixRow) -> dict[str, Any]:
    return {field.name: _export_value(field, field.value_from_object(row)) for field in _columns()}


def _export_value(field: models.Field, value: Any) -> Any:
    if isinstance(field, models.DurationField) and value is not None:
        return duration_format(value)
    return None if value == "" else value


def _refuse(problems: list[str]) -> NoReturn:
    listing = "\n".join(f"- {problem}" for problem in problems)
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    detail = f"the matrix file has {count}, nothing was changed:\n{listing}"
    raise InvalidMatrixFile(detail, problems=problems)


def _kind(value: Any) -> str:
    if value is None:
        return "an empty document"
    return {dict: "a mapping", list: "a list", str: "text"}.get(type(value), f"a {type(value).__name__}")


def _row_label(index: int, row: Any) -> str:
    failure_type = row.get("failure_type") if isinstance(row, dict) else None
    return f"row {index} ({failure_type})" if isinstance(failure_type, str) else f"row {index}"


def _row_clean(row: Any) -> tuple[dict[str, Any], list[str]]:
    """One row's clean values and its problems; the model's own checks run once the values parse."""
    if not isinstance(row, dict):
        return {}, [f"must be a mapping of column to value, not {_kind(row)}"]
    names = {field.name for field in _columns()}
    problems = [f"unknown key {key!r}" for key in row if key not in names]
    values: dict[str, Any] = {}
    for field in _columns():
        if field.name not in row and _is_required(field):
            problems.append(f"{field.name}: missing, the column is required")
            continue
        value, problem = _value_clean(field, row.get(field.name))
        if problem:
            problems.append(f"{field.name}: {problem}")
        else:
            values[field.name] = value
    return values, problems or _model_problems(values)


def _is_required(field: models.Field) -> bool:
    return not (field.null or field.blank or field.has_default())


def _empty(field: models.Field) -> Any:
    if field.has_default():
        return field.get_default()
    return None if field.null else ""


def _value_clean(field: models.Field, raw: Any) -> tuple[Any, str | None]:
    if raw is None or raw == "":
        return (None, "must have a value") if _is_required(field) else (_empty(field), None)
    if field.choices:
        allowed = [value for value, _ in field.choices]
        return (raw, None) if raw in allowed else (None, f"{raw!r} is not one of {', '.join(allowed)}")
    if isinstance(field, models.DurationField):
        return _duration_clean(raw)
    if isinstance(field, models.BooleanField):
        return (raw, None) if isinstance(raw, bool) else (None, f"{raw!r} is not true or false")
    if isinstance(field, models.IntegerField):
        return _integer_clean(raw)
    return (raw, None) if isinstance(raw, str) else (None, f"{raw!r} is not text")


def _duration_clean(raw: Any) -> tuple[timedelta | None, str | None]:
    value = duration_parse(raw) if isinstance(raw, str) else None
    if value is None:
        return None, f"{raw!r} is not {_DURATION_HINT}"
    if not value:
        return None, f"{raw!r} must be longer than zero"
    return value, None


def _integer_clean(raw: Any) -> tuple[int | None, str | None]:
    if isinstance(raw, bool) or not isinstance(raw, int):
        return None, f"{raw!r} is not a whole number"
    if raw < 0:
        return None, f"{raw!r} is negative, it must be 0 or more"
    return raw, None


def _model_problems(values: dict[str, Any]) -> list[str]:
    """What the model's field checks refuse (lengths, limits); uniqueness is checked across the file."""
    try:
        MatrixRow(**values).full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        return [f"{name}: {message}" for name, messages in exc.message_dict.items() for message in messages]
    return []


def _upsert(rows: list[dict[str, Any]], *, actor: Actor, now: datetime) -> MatrixImportResult:
    existing = {row.failure_type: row for row in MatrixRow.objects.select_for_update()}
    created, updated, unchanged = [], [], 0
    for values in rows:
        row = existing.get(values["failure_type"]) or MatrixRow()
        before = row_state(row) if row.pk is not None else None
        for name, value in values.items():
            setattr(row, name, value)
        if before is not None and row_state(row) == before:
            unchanged += 1
            continue
        row.save()
        (created if before is None else updated).append((row, before, row_state(row)))
    audit_bulk(actor=actor, action=AuditAction.CREATE, changes=created, at=now, reason="matrix import")
    audit_bulk(actor=actor, action=AuditAction.UPDATE, changes=updated, at=now, reason="matrix import")
    return MatrixImportResult(created=len(created), updated=len(updated), unchanged=unchanged)
