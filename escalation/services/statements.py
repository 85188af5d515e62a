"""Storage mechanics for PostgreSQL statements the ORM cannot write: a row and its dependants in one CTE.

Each row travels as one JSON parameter that PostgreSQL turns into the table's row type
(``jsonb_populate_record``), so the statement's text depends only on the tables and stays short:
psycopg parses it once per process instead of quoting dozens of parameters per row. Columns and
values come from the model's fields (``_meta.concrete_fields``, ``pre_save``), so a field added to
a model is stored here without touching this code. Identifiers come from the models, values are
parameters.
"""

import contextlib
import datetime
import decimal
import enum
import functools
import json
import re
import uuid
from collections.abc import Iterable

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, models, transaction
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.backends.utils import CursorWrapper
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init
from django.utils.functional import Promise
from psycopg.types.datetime import TimestamptzLoader

from portal.json_text import json_text


class _PreparingCursor(ServerBindingCursor):
    """Binds parameters on the server and prepares each statement on its first run on the connection."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=True, binary=binary)


def prepared_cursor() -> CursorWrapper:
    """A cursor for the statements every ingested event runs: on PostgreSQL each is prepared once per
    connection, and the server then skips parsing and planning it, which was half of its CPU per event.

    Their text depends only on the models (values are parameters), so each prepares once. The rest of
    the portal keeps Django's client-side binding, which never prepares: a generic plan cannot use the
    partial indexes on open failures when the statuses are parameters, so the statements run here name
    them as literals. ``PORTAL_DB_PREPARE=0`` (a pooler that drops prepared statements) binds on the
    server without preparing. Elsewhere an ordinary cursor.
    """
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql":
        return db.cursor()
    db.ensure_connection()
    cursor = _PreparingCursor(db.connection)
    return db.make_debug_cursor(cursor) if db.queries_logged else db.make_cursor(cursor)


def statement_alone() -> contextlib.AbstractContextManager:
    """Around one statement that may fail as a whole (a unique violation that the caller handles): nothing
    when the connection is in autocommit, where the statement is its own transaction; a savepoint inside
    a caller's transaction, which its failure then leaves usable."""
    return transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()


def violated_constraint(error: IntegrityError) -> str | None:
    """The name of the constraint an IntegrityError from PostgreSQL violated."""
    diag = getattr(error.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None)


class JsonText(str):
    """A JSON column's value already encoded (``insert_values`` stores it as it is instead of encoding it)."""


def unsaved(model: type[models.Model], **values: object) -> models.Model:
    """``model(**values)`` without ``Model.__init__``'s loop over every field: a report opens thousands of rows.

    The defaults are worked out once per model (callable ones, such as ``list``, are called per row);
    ``values`` are then set as attributes, so related objects and ``*_id`` keys go through the field
    descriptors as ``__init__`` sends them. A model with pre_init or post_init receivers is built by
    ``__init__`` itself.
    """
    if pre_init.has_listeners(model) or post_init.has_listeners(model):
        return model(**values)
    constant, computed = _defaults(model)
    obj = model.__new__(model)
    obj.__dict__.update(constant)
    for attname, default in computed:
        obj.__dict__[attname] = default()
    obj._state = ModelState()
    for name, value in values.items():
        setattr(obj, name, value)
    return obj


@functools.cache
def _defaults(model: type[models.Model]) -> tuple[dict, tuple]:
    """(attname -> default that every row may share, (attname, default function) pairs called per row)."""
    constant, computed = {}, []
    for field in model._meta.concrete_fields:
        if field.has_default() and callable(field.default):
            computed.append((field.attname, field.default))  # what get_default calls, without its two calls around
        elif field.db_default is not models.NOT_PROVIDED:
            computed.append((field.attname, field.get_default))
        else:
            constant[field.attname] = field.get_default()
    return constant, tuple(computed)


def _json_default(value: object) -> object:
    """What ``json.dumps`` cannot write itself, in the text PostgreSQL's input functions read."""
    if isinstance(value, datetime.timedelta):  # an interval, exactly
        return f"{value.days} days {value.seconds}.{value.microseconds:06d} seconds"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID | Promise):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot store a {type(value).__name__} as a JSON row value")


def row_json(obj: models.Model) -> str:
    """One unsaved row as a JSON object of its columns; a missing auto key is left out."""
    values = {}
    for field, column, pre_save in _fields(type(obj)):
        value = field.pre_save(obj, add=True) if pre_save else obj.__dict__[field.attname]
        if value is None and field.primary_key:
            continue
        values[column] = value
    return json_text(values, default=_json_default)


def _insert_select(obj: models.Model, refs: dict[str, str] | None = None, sources: str = "") -> tuple[str, str]:
    """``INSERT INTO <table> (...) SELECT ... FROM jsonb_populate_record(...) r [, sources]`` and its parameter.

    ``refs`` gives SQL expressions for some fields (by attname) in place of the row's values; a missing
    auto key is left to the table's default.
    """
    refs_key = tuple(sorted(refs.items())) if refs else ()
    return _insert_text(type(obj), obj.pk is not None, refs_key, sources), row_json(obj)


@functools.cache
def _insert_text(model: type[models.Model], with_key: bool, refs: tuple[tuple[str, str], ...], sources: str) -> str:
    """The statement text depends only on these, so it is built once per process."""
    quote, by_attname = connection.ops.quote_name, dict(refs)
    fields = [f for f in model._meta.concrete_fields if with_key or not f.primary_key]
    columns = ", ".join(quote(f.column) for f in fields)
    selected = ", ".join(by_attname.get(f.attname, f"r.{quote(f.column)}") for f in fields)
    table = _table_of(model)
    source = f"jsonb_populate_record(NULL::{table}, %s::jsonb) r" + (f", {sources}" if sources else "")
    return f"INSERT INTO {table} ({columns}) SELECT {selected} FROM {source}"  # noqa: S608 - from _meta


# An earlier CTE's id in a ref: "run.id", or within an expression.
_CTE_ID = re.compile(r"\b([a-z_][a-z0-9_]*)\.id\b")


def _sources(refs: dict[str, str]) -> str:
    """The CTEs the refs read, for the FROM list: a row is inserted once per row they returned."""
    return ", ".join(sorted({alias for ref in refs.values() for alias in _CTE_ID.findall(ref)}))


def rows_locked(model: type[models.Model], where: str, params: list) -> list[models.Model]:
    """The rows ``WHERE <where>`` (SQL over the table's columns, values as parameters) in id order, locked
    ``FOR UPDATE`` where the database can: the ORM's ``select_for_update().filter()`` as one prepared
    statement, without compiling the query on every call (every passing job of a report asks for its open
    failures). Values go through the fields' converters as the ORM's would."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    sql = f"SELECT {row_columns(model)} FROM {_table_of(model)} WHERE {where} ORDER BY id{lock}"  # noqa: S608 - from _meta
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return [loaded_row(model, row) for row in cursor.fetchall()]


def row_columns(model: type[models.Model]) -> str:
    """The model's columns, quoted, in field order: the select list whose rows ``loaded_row`` reads."""
    return _loaded(model)[1]


def loaded_row(model: type[models.Model], row: Iterable) -> models.Model:
    """A row of ``row_columns(model)`` as the ORM would load it, its values through the fields' converters."""
    fields, _, converters = _loaded(model)
    values = list(row)
    for i, expression, functions in converters:
        for convert in functions:
            values[i] = convert(values[i], expression, connection)
    return model.from_db(connection.alias, fields, values)


@functools.cache
def _loaded(model: type[models.Model]) -> tuple[list[str], str, list[tuple[int, object, list]]]:
    """A model's attnames, their quoted columns, and the converters each column's values need."""
    fields = model._meta.concrete_fields
    converters = []
    for i, field in enumerate(fields):
        expression = field.get_col(model._meta.db_table)
        functions = connection.ops.get_db_converters(expression) + field.get_db_converters(connection)
        if functions:
            converters.append((i, expression, functions))
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    return [f.attname for f in fields], columns, converters


def update_by_ids(
    model: type[models.Model], values: dict[str, object], ids: list[int], *, gate: str = ""
) -> tuple[str, list]:
    """``UPDATE`` setting the same ``values`` (by attname) on the rows with these ids, and its parameters:
    the ORM's ``filter(pk__in=ids).update(**values)`` as a statement to run within a longer one, where
    ``gate`` names an earlier CTE of it: nothing is updated when that returned no row."""
    params = [value.value if isinstance(value, enum.Enum) else value for value in values.values()]
    return _update_text(model, tuple(values), gate), [*params, ids]


@functools.cache
def _update_text(model: type[models.Model], attnames: tuple[str, ...], gate: str) -> str:
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    assignments = ", ".join(f"{connection.ops.quote_name(by_attname[name].column)} = %s" for name in attnames)
    gated = f" AND EXISTS (SELECT 1 FROM {gate})" if gate else ""  # noqa: S608 - the caller's alias
    return f"UPDATE {_table_of(model)} SET {assignments} WHERE id = ANY(%s){gated}"  # noqa: S608 - from _meta


def insert_rows(rows: list[models.Model], *, first: tuple[str, list] | None = None) -> None:
    """Insert unsaved rows of any models in one statement (a CTE per row); their keys are not read back.

    ``first`` (a data-modifying SQL statement and its parameters) runs in the same statement, as its
    first CTE; the inserts do not see its changes (all CTEs share one snapshot).
    """
    if not rows:
        return
    parts, params = [], []
    if first is not None:
        parts.append(f"first AS ({first[0]})")
        params.extend(first[1])
    for n, row in enumerate(rows):
        insert, param = _insert_select(row)
        parts.append(f"r{n} AS ({insert})")
        params.append(param)
    with prepared_cursor() as cursor:
        cursor.execute("WITH " + ", ".join(parts) + " SELECT 1", params)


def insert_from(row: models.Model, *, refs: dict[str, str], gate: str = "") -> tuple[str, list]:
    """``INSERT INTO <table> (...) SELECT ...`` of one row whose ``refs`` name an earlier CTE's columns.

    Inserts one row per row of that CTE (and of the CTE ``gate`` names), so nothing when it returned nothing.
    """
    insert, param = _insert_select(row, refs, ", ".join(filter(None, [_sources(refs), gate])))
    return insert, [param]


def insert_with_dependants(row: models.Model, *, on_conflict: str, dependants: list[models.Model]) -> bool:
    """Insert ``row`` (its key set) and, only if it was inserted, ``dependants``: one statement.

    ``on_conflict`` is the ``ON CONFLICT ... DO NOTHING`` clause; False when it did nothing.
    """
    insert, param = _insert_select(row)
    parts, params = [f"main AS ({insert} {on_conflict} RETURNING 1)"], [param]
    for n, dependant in enumerate(dependants):
        insert, param = _insert_select(dependant, sources="main")
        parts.append(f"d{n} AS ({insert})")
        params.append(param)
    sql = "WITH " + ", ".join(parts) + " SELECT count(*) FROM main"  # noqa: S608 - identifiers from _meta
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0] == 1


@functools.cache
def _fields(model: type[models.Model]) -> list[tuple[models.Field, str, bool]]:
    """Each concrete field, its column, and whether its value comes from ``pre_save`` (``auto_now``)."""
    fields = []
    for field in model._meta.concrete_fields:
        pre_save = type(field).pre_save is not models.Field.pre_save
        if isinstance(field, models.DateField):
            pre_save = field.auto_now or field.auto_now_add
        fields.append((field, field.column, pre_save))
    return fields


def _table(obj: models.Model) -> str:
    return _table_of(type(obj))


def _table_of(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def conflict_update(model: type[models.Model], *, unique_fields: list[str], update_fields: list[str]) -> str:
    """``ON CONFLICT (<unique>) DO UPDATE SET <f> = EXCLUDED.<f>``, as ``bulk_create(update_conflicts=True)``."""
    return _conflict_text(model, tuple(unique_fields), tuple(update_fields))


@functools.cache
def _conflict_text(model: type[models.Model], unique_fields: tuple[str, ...], update_fields: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    unique = ", ".join(quote(model._meta.get_field(name).column) for name in unique_fields)
    columns = [quote(model._meta.get_field(name).column) for name in update_fields]
    return f"ON CONFLICT ({unique}) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in columns)


Step = tuple[str, models.Model, dict[str, str], str]


def insert_chain(steps: list[Step]) -> list[int | None]:
    """Insert rows that refer to the rows before them in one statement; the ids, None where nothing was stored.

    Each step is (alias, unsaved row, refs, ``ON CONFLICT`` clause); refs give SQL for some fields (by
    attname) that reads earlier ids: ``"<earlier alias>.id"``, which the row then takes as its value, or an
    expression over them and the row's own values (``r.<column>``). A step that refers to an earlier one
    stores nothing when that one stored nothing. The rows take their ids.
    """
    parts, params = chain_parts(steps)
    with prepared_cursor() as cursor:
        cursor.execute("WITH " + ", ".join(parts) + f" SELECT {chain_ids(steps)}", params)
        ids = list(cursor.fetchone())
    chain_stored(steps, ids)
    return ids


def chain_parts(steps: list[Step], *, gate: str = "") -> tuple[list[str], list]:
    """The CTEs of ``insert_chain`` (each returning its row's id) and their parameters, for a longer statement.

    ``gate`` names an earlier CTE of that statement: the first step selects from it too, so the chain
    stores nothing when it returned no row.
    """
    parts, params = [], []
    for n, (alias, row, refs, on_conflict) in enumerate(steps):
        sources = ", ".join(filter(None, [_sources(refs), gate if n == 0 else ""]))
        insert, param = _insert_select(row, refs, sources)
        parts.append(f"{alias} AS ({insert} {on_conflict} RETURNING id)")
        params.append(param)
    return parts, params


def chain_ids(steps: list[Step]) -> str:
    """The ``SELECT`` list of the chain's ids, in step order."""
    return ", ".join(f"(SELECT id FROM {alias})" for alias, *_ in steps)  # noqa: S608 - the caller's aliases


def chain_stored(steps: list[Step], ids: list[int | None]) -> None:
    """The chain's rows take their ids (None: not stored) and the ids of the rows they refer to."""
    by_alias = {f"{alias}.id": pk for (alias, *_), pk in zip(steps, ids, strict=True)}
    for (_, row, refs, _), pk in zip(steps, ids, strict=True):
        row.pk = pk
        for attname, ref in refs.items():
            if ref in by_alias:  # an expression's value is not known here
                setattr(row, attname, by_alias[ref])
        if pk is not None:
            row._state.adding, row._state.db = False, connection.alias


def copy_rows(rows: list[models.Model]) -> None:
    """Insert unsaved rows of one model with COPY: for thousands of rows, far less work than an INSERT.

    Rows whose auto key is unset get it from the table's default; set keys are stored as they are
    (see ``next_ids``). Values go to psycopg as the row holds them, JSON as its text: fields
    that compute their value on save (``auto_now``) are not supported. Runs in the caller's
    transaction; a unique violation fails the whole COPY.
    """
    if not rows:
        return
    model = type(rows[0])
    fields = [f for f in model._meta.concrete_fields if not (f.primary_key and getattr(rows[0], f.attname) is None)]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    names = [f.attname for f in fields]
    json = {n for f, n in zip(fields, names, strict=True) if isinstance(f, models.JSONField)}
    statement = f"COPY {_table(rows[0])} ({columns}) FROM STDIN"  # noqa: S608 - identifiers from _meta
    # wrap_database_errors: a unique violation raises Django's IntegrityError, as an INSERT's would.
    with connection.wrap_database_errors, connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        copy.set_types(copy_types(model, names))
        for row in rows:
            values = row.__dict__
            copy.write_row([_json_column(values[n]) if n in json else values[n] for n in names])


def copy_types(model: type[models.Model], names: Iterable[str]) -> list[str]:
    """The PostgreSQL types of these fields for ``Copy.set_types``: psycopg then dumps each column with one
    dumper instead of looking one up for every value (a third less CPU for a large COPY). JSON columns go
    as text, which is how ``copy_rows`` and ``insert_values`` send them."""
    return list(_copy_types(model, tuple(names)))


@functools.cache
def _copy_types(model: type[models.Model], names: tuple[str, ...]) -> tuple[str, ...]:
    fields = [model._meta.get_field(name) for name in names]
    return tuple("text" if isinstance(f, models.JSONField) else f.db_type(connection).partition("(")[0] for f in fields)


def _json_column(value: object) -> str:
    """A JSON column's value as COPY's text form: PostgreSQL reads the text with the column's input function."""
    return value if type(value) is JsonText else json_text(value, default=_json_default)


def next_ids(model: type[models.Model], count: int) -> list[int]:
    """``count`` values of the model's id sequence, taken before a COPY that must know its rows' keys."""
    if count == 0:
        return []
    with connection.cursor() as cursor:
        # The sequence is named by a constant: nextval() of a sequence looked up in the same statement
        # takes three times as long per value.
        cursor.execute("SELECT nextval(%s::regclass) FROM generate_series(1, %s)", [_id_sequence(model), count])
        return [row[0] for row in cursor.fetchall()]


@functools.cache
def _id_sequence(model: type[models.Model]) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [model._meta.db_table])
        return cursor.fetchone()[0]


def insert_many(rows: list[models.Model], *, keys_needed: bool = False) -> None:
    """Many new rows of one model: COPY on PostgreSQL (keys taken first when the caller needs them),
    ``bulk_create`` elsewhere (which sets the keys itself)."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        type(rows[0]).objects.bulk_create(rows, batch_size=1000)
        return
    if keys_needed:
        for row, pk in zip(rows, next_ids(type(rows[0]), len(rows)), strict=True):
            row.pk = pk
    copy_rows(rows)
    for row in rows:  # stored, as bulk_create leaves them
        row._state.adding, row._state.db = False, connection.alias


def insert_values(model: type[models.Model], names: list[str], rows: list[tuple], *, keys_needed: bool = False) -> list:
    """Many new rows given as tuples of the ``names`` attributes: COPY on PostgreSQL without building model
    instances (a sweep writes tens of thousands), ``bulk_create`` of instances elsewhere. With
    ``keys_needed``, returns the new rows' keys in order (on PostgreSQL taken from the sequence first)."""
    if not rows:
        return []
    if connection.vendor != "postgresql":
        decoded = [[json.loads(v) if type(v) is JsonText else v for v in row] for row in rows]
        objs = [model(**dict(zip(names, row, strict=True))) for row in decoded]
        model.objects.bulk_create(objs, batch_size=1000)
        return [obj.pk for obj in objs] if keys_needed else []
    keys = []
    if keys_needed:
        keys = next_ids(model, len(rows))
        names = ["id", *names]
        rows = [(key, *row) for key, row in zip(keys, rows, strict=True)]
    fields = [model._meta.get_field(name) for name in names]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    json_columns = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
    statement = f"COPY {connection.ops.quote_name(model._meta.db_table)} ({columns}) FROM STDIN"  # noqa: S608
    with connection.wrap_database_errors, connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        copy.set_types(copy_types(model, names))
        for row in rows:
            if json_columns:
                row = list(row)
                for i in json_columns:
                    row[i] = _json_column(row[i])
            copy.write_row(row)
    return keys


def insert_dicts(model: type[models.Model], rows: list[dict]) -> None:
    """``insert_values`` of rows given as dicts with the same keys in the same order."""
    if rows:
        insert_values(model, list(rows[0]), [tuple(row.values()) for row in rows])


def values_rows(queryset: models.QuerySet) -> list[tuple]:
    """The rows of a ``values_list`` queryset, on PostgreSQL with psycopg's own timestamptz loader (its C
    version) in place of Django's, which is Python and costs microseconds a value: a sweep reads some
    70,000. Django keeps the connection in UTC, so the values are the same aware datetimes. Other values
    come as the driver gives them, without the fields' converters: JSON as text, as Django's jsonb loader
    leaves it. Elsewhere the queryset itself, converters applied."""
    if connection.vendor != "postgresql":
        return list(queryset)
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)  # this cursor only
        cursor.execute(sql, params)
        return cursor.fetchall()


def array_text(values: Iterable[int | str | datetime.datetime | None]) -> str:
    """PostgreSQL's text form of a one-dimensional array of integers, strings, datetimes and NULLs: one
    parameter to cast (``%s::bigint[]``) or compare (``= ANY(%s)``).

    psycopg adapts a list element by element in Python and quotes each string with a regular expression;
    a sweep passes some hundred thousand elements, for which that costs a few tenths of a second.
    """
    values = list(values)
    if all(type(value) is int for value in values):  # ids and keys, most lists: no call per element
        return "{" + ",".join(map(str, values)) + "}"
    return "{" + ",".join(map(_array_element, values)) + "}"


def _array_element(value: int | str | datetime.datetime | None) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"no array text for {type(value).__name__}")
