"""A run-level failure resolves as superseded when its jobs' failures arrive."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("escalation", "0004_reports_source_webhook_secret"),
    ]

    operations = [
        migrations.AlterField(
            model_name="failure",
            name="resolution",
            field=models.CharField(
                blank=True,
                choices=[
                    ("fixed", "Fixed"),
                    ("recovered", "Recovered (the same job passed again)"),
                    ("false_positive", "False positive"),
                    ("superseded", "Superseded (replaced by the failures of its jobs)"),
                ],
                max_length=16,
            ),
        ),
    ]
