"""The eleven role groups with the permissions of portal.roles.CAPABILITIES."""

from django.db import migrations


def forward(apps, schema_editor):
    from portal.roles import sync_role_groups

    sync_role_groups(apps)


def backward(apps, schema_editor):
    from escalation.choices import Role

    apps.get_model("auth", "Group").objects.filter(name__in=[role.label for role in Role]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0001_audit_log"),
        ("escalation", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(forward, backward)]
