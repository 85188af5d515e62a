"""QA's triage verdict on a failure's type, the permission to confirm it, and the triage queue."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("escalation", "0005_classification_failure_evidence"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="failure",
            options={
                "ordering": ["-first_seen_at", "-id"],
                "permissions": [
                    ("acknowledge_failure", "Can acknowledge failures"),
                    ("resolve_failure", "Can resolve failures"),
                    ("correct_failure_type", "Can correct a failure's type"),
                    ("confirm_failure_type", "Can confirm a failure's type in triage"),
                ],
            },
        ),
        migrations.AddField(
            model_name="failure",
            name="triage_verdict",
            field=models.CharField(
                blank=True,
                choices=[("confirmed", "Type confirmed"), ("corrected", "Type corrected")],
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="failure",
            name="triaged_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="failure",
            name="triaged_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddIndex(
            model_name="failure",
            index=models.Index(
                condition=models.Q(
                    ("status__in", ["open", "acknowledged"]),
                    ("triage_due_at__isnull", False),
                    ("triaged_at__isnull", True),
                ),
                fields=["first_seen_at"],
                name="failure_awaiting_triage_idx",
            ),
        ),
        migrations.CreateModel(
            name="FailureAwaitingTriage",
            fields=[],
            options={
                "verbose_name": "failure awaiting triage",
                "verbose_name_plural": "triage queue",
                "proxy": True,
                "indexes": [],
                "constraints": [],
            },
            bases=("escalation.failure",),
        ),
    ]
