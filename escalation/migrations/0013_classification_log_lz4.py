"""Log excerpts are stored with lz4 TOAST compression on PostgreSQL 14+ (pglz elsewhere, as before).

A rule change's preview reads the excerpts of every candidate failure; lz4 decompresses several
times faster than the default pglz at about the same size, which halves the database's share of a
preview over 100,000 failures (bench/classify.py). New rows only: rows stored before keep pglz.
"""

from django.db import migrations, transaction


def forward(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql" or connection.pg_version < 140000:
        return
    try:
        with transaction.atomic(using=connection.alias):
            schema_editor.execute("ALTER TABLE escalation_cievent ALTER COLUMN log_excerpt SET COMPRESSION lz4")
    except Exception:  # a server built without lz4 keeps pglz; nothing else depends on it
        return


def backward(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor == "postgresql" and connection.pg_version >= 140000:
        schema_editor.execute("ALTER TABLE escalation_cievent ALTER COLUMN log_excerpt SET COMPRESSION pglz")


class Migration(migrations.Migration):
    dependencies = [("escalation", "0012_merge_20261124_0933")]
    operations = [migrations.RunPython(forward, backward)]
