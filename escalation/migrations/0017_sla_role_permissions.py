"""Every role may view the SLA engine's records; owners set resolution plans; some mark failures complex;
QA, the Scrum Master, DevOps and CI/CD manage notification channels and ticket trackers and retry notifications."""

from django.db import migrations


def forward(apps, schema_editor):
    from portal.roles import sync_role_groups

    sync_role_groups(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("escalation", "0016_sla_engine"),
        ("portal", "0002_role_groups"),
    ]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
