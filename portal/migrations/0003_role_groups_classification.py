"""Role groups get the classification and triage permissions: confirm a failure's type, apply a
previewed rule change, view rule versions and rule changes (portal.roles.CAPABILITIES)."""

from django.db import migrations


def forward(apps, schema_editor):
    from portal.roles import sync_role_groups

    sync_role_groups(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0002_role_groups"),
        ("escalation", "0010_classification_backfill_failures"),
    ]
    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
