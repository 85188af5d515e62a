"""Every role may view reports, findings, rotations, flaky observations, run flags and deliveries."""

from django.db import migrations


def forward(apps, schema_editor):
    from portal.roles import sync_role_groups

    sync_role_groups(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("escalation", "0008_reports_rotation_and_flaky"),
        ("portal", "0002_role_groups"),
    ]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
