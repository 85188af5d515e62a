"""Every index a write maintains earns its keep: none of the portal's tables has an index that another one covers."""

import pytest
from django.apps import apps
from django.db import connection

pytestmark = pytest.mark.django_db

# Each index's table, name, columns in order, and whether it is unique and whether partial. A unique index
# enforces what a wider one does not, and a partial index covers only some rows.
INDEXES = """
SELECT t.relname, i.relname, array_agg(a.attname ORDER BY k.n), ix.indisunique, ix.indpred IS NOT NULL
FROM pg_index ix
JOIN pg_class i ON i.oid = ix.indexrelid
JOIN pg_class t ON t.oid = ix.indrelid
CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, n)
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
WHERE t.relname = ANY(%s)
GROUP BY t.relname, i.relname, ix.indisunique, ix.indpred
"""


def test_no_index_repeats_the_leading_columns_of_another():
    tables = [
        model._meta.db_table
        for app in ("escalation", "gates", "portal")
        for model in apps.get_app_config(app).get_models()
        if not model._meta.auto_created  # many-to-many tables are Django's own
    ]
    with connection.cursor() as cursor:
        cursor.execute(INDEXES, [tables])
        indexes = cursor.fetchall()
    assert {row[0] for row in indexes} >= {"escalation_failure", "escalation_cievent", "portal_auditentry"}
    covered = [
        f"{table}.{name} {columns} is covered by {other} {wider}"
        for table, name, columns, unique, partial in indexes
        if not (unique or partial)
        for other_table, other, wider, _, other_partial in indexes
        if other_table == table and not other_partial and len(wider) > len(columns) and wider[: len(columns)] == columns
    ]
    assert covered == []
