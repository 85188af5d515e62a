"""Sources keep a webhook secret (GitHub HMAC key, GitLab token)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("escalation", "0003_default_classification_rules"),
    ]

    operations = [
        migrations.AddField(
            model_name="ingestsource",
            name="webhook_secret",
            field=models.CharField(blank=True, editable=False, max_length=255),
        ),
    ]
