"""Storage mechanics for PostgreSQL statements the ORM cannot write: a row and its dependants in one CTE.

Column lists and values come from the model's fields (``_meta.concrete_fields``, ``pre_save``,
``get_db_prep_save``), so a field added to a model is stored here without touching this code.
Every value carries an explicit cast: inside ``INSERT ... SELECT`` PostgreSQL cannot infer the type
of a bare literal from the target column. Identifiers come from the models, values are parameters.
"""

import functools

from django.db import connection, models
from psycopg.types.json import Jsonb


def row_values(obj: models.Model, *, refs: dict[str, str] | None = None, cast: bool = True) -> tuple[str, str, list]:
    """The columns, placeholders and params of one unsaved row; a missing auto key is left out.

    ``refs`` gives SQL expressions for some fields (by attname) in place of parameters. ``cast=False``
    leaves the casts out, for a ``VALUES`` list (PostgreSQL types it from the columns): psycopg caches
    the parsing of statements up to 4 KiB only, and a failure's row with casts alone comes close.
    """
    columns, values, params = [], [], []
    for field, column, placeholder in _fields(type(obj)):
        if field.primary_key and getattr(obj, field.attname) is None:
            continue
        columns.append(column)
        if refs and field.attname in refs:
            values.append(refs[field.attname])
            continue
        values.append(placeholder if cast else "%s")
        params.append(field.get_db_prep_save(field.pre_save(obj, add=True), connection))
    return ", ".join(columns), ", ".join(values), params


def insert_rows(rows: list[models.Model]) -> None:
    """Insert unsaved rows of any models in one statement (a CTE per row); their keys are not read back."""
    if not rows:
        return
    parts, params = [], []
    for n, row in enumerate(rows):
        columns, values, row_params = row_values(row, cast=False)
        parts.append(f"r{n} AS (INSERT INTO {_table(row)} ({columns}) VALUES ({values}))")  # noqa: S608 - from _meta
        params += row_params
    with connection.cursor() as cursor:
        cursor.execute("WITH " + ", ".join(parts) + " SELECT 1", params)


def insert_from(row: models.Model, *, refs: dict[str, str]) -> tuple[str, list]:
    """``INSERT INTO <table> (...) SELECT ... FROM <alias>`` of one row whose ``refs`` name an earlier CTE's columns.

    Inserts one row per row of that CTE, so nothing when it returned nothing.
    """
    columns, values, params = row_values(row, refs=refs)
    source = ", ".join(sorted({ref.split(".")[0] for ref in refs.values()}))
    select = f"SELECT {values} FROM {source}"  # noqa: S608 - identifiers from _meta; the values are params
    return f"INSERT INTO {_table(row)} ({columns}) {select}", params


def insert_with_dependants(
    row: models.Model, *, on_conflict: str, conflict_params: list, dependants: list[models.Model]
) -> int | None:
    """Insert ``row`` (its key set) and, only if it was inserted, ``dependants``: one statement.

    ``on_conflict`` is the ``ON CONFLICT ... DO NOTHING`` clause; None when it did nothing.
    """
    columns, values, params = row_values(row, cast=False)
    insert = f"INSERT INTO {_table(row)} ({columns}) VALUES ({values}) {on_conflict} RETURNING 1"  # noqa: S608
    parts = [f"main AS ({insert})"]
    params += conflict_params
    for n, dependant in enumerate(dependants):
        columns, values, dependant_params = row_values(dependant)
        select = f"SELECT {values} FROM main"  # noqa: S608 - placeholders only; the values are params
        parts.append(f"d{n} AS (INSERT INTO {_table(dependant)} ({columns}) {select})")
        params += dependant_params
    sql = "WITH " + ", ".join(parts) + " SELECT count(*) FROM main"  # noqa: S608 - identifiers from _meta
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0] == 1


@functools.cache
def _fields(model: type[models.Model]) -> list[tuple[models.Field, str, str]]:
    """Each concrete field with its quoted column and cast placeholder; computed once per model."""
    quote = connection.ops.quote_name
    return [(f, quote(f.column), f"%s::{f.cast_db_type(connection)}") for f in model._meta.concrete_fields]


def _table(obj: models.Model) -> str:
    return connection.ops.quote_name(obj._meta.db_table)


def conflict_update(model: type[models.Model], *, unique_fields: list[str], update_fields: list[str]) -> str:
    """``ON CONFLICT (<unique>) DO UPDATE SET <f> = EXCLUDED.<f>``, as ``bulk_create(update_conflicts=True)``."""
    quote = connection.ops.quote_name
    unique = ", ".join(quote(model._meta.get_field(name).column) for name in unique_fields)
    columns = [quote(model._meta.get_field(name).column) for name in update_fields]
    return f"ON CONFLICT ({unique}) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in columns)


def insert_chain(steps: list[tuple[str, models.Model, dict[str, str], str]]) -> list[int | None]:
    """Insert rows that refer to the rows before them in one statement; the ids, None where nothing was stored.

    Each step is (alias, unsaved row, {attname: "<earlier alias>.id"}, ``ON CONFLICT`` clause). A step
    that refers to an earlier one stores nothing when that one stored nothing.
    """
    parts, params, done = [], [], []
    for alias, row, refs, on_conflict in steps:
        columns, values, row_params = row_values(row, refs=refs, cast=bool(refs))
        if refs:
            source = ", ".join(sorted({ref.split(".")[0] for ref in refs.values()}))
            select = f"SELECT {values} FROM {source}"  # noqa: S608 - identifiers from _meta; the values are params
        else:
            select = f"VALUES ({values})"
        parts.append(f"{alias} AS (INSERT INTO {_table(row)} ({columns}) {select} {on_conflict} RETURNING id)")
        params += row_params
        done.append(alias)
    ids = ", ".join(f"(SELECT id FROM {alias})" for alias in done)  # noqa: S608 - aliases of this function's caller
    with connection.cursor() as cursor:
        cursor.execute("WITH " + ", ".join(parts) + f" SELECT {ids}", params)
        return list(cursor.fetchone())


def copy_rows(rows: list[models.Model]) -> None:
    """Insert unsaved rows of one model with COPY: for thousands of rows, far less work than an INSERT.

    Rows whose auto key is unset get it from the table's default; set keys are stored as they are
    (see ``next_ids``). Values go to psycopg as the row holds them, JSON wrapped as jsonb: fields
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
        for row in rows:
            values = row.__dict__
            copy.write_row([Jsonb(values[n]) if n in json else values[n] for n in names])


def next_ids(model: type[models.Model], count: int) -> list[int]:
    """``count`` values of the model's id sequence, taken before a COPY that must know its rows' keys."""
    if count == 0:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [model._meta.db_table, count],
        )
        return [row[0] for row in cursor.fetchall()]


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
        objs = [model(**dict(zip(names, row, strict=True))) for row in rows]
        model.objects.bulk_create(objs, batch_size=1000)
        return [obj.pk for obj in objs] if keys_needed else []
    keys = []
    if keys_needed:
        keys = next_ids(model, len(rows))
        names = ["id", *names]
        rows = [(key, *row) for key, row in zip(keys, rows, strict=True)]
    fields = [model._meta.get_field(name) for name in names]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    json = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
    statement = f"COPY {connection.ops.quote_name(model._meta.db_table)} ({columns}) FROM STDIN"  # noqa: S608
    with connection.wrap_database_errors, connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for row in rows:
            if json:
                row = list(row)
                for i in json:
                    row[i] = Jsonb(row[i])
            copy.write_row(row)
    return keys
