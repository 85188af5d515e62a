"""Credential-rotation tasks and flaky observations."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("escalation", "0007_reports_uploads"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="CredentialRotation",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "committer",
                    models.CharField(blank=True, help_text="Who committed the secret, as reported", max_length=254),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[("open", "Open"), ("confirmed", "Rotation confirmed")], default="open", max_length=16
                    ),
                ),
                ("opened_at", models.DateTimeField()),
                ("confirmed_at", models.DateTimeField(blank=True, null=True)),
                ("note", models.TextField(blank=True)),
                (
                    "assignee",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="rotations",
                        to="escalation.person",
                    ),
                ),
                (
                    "assignee_team",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="escalation.team",
                    ),
                ),
                (
                    "confirmed_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "failure",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="credential_rotation",
                        to="escalation.failure",
                    ),
                ),
                (
                    "security_team",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="escalation.team",
                    ),
                ),
            ],
            options={
                "ordering": ["-opened_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="FlakyObservation",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("job_name", models.CharField(max_length=255)),
                ("test_key", models.CharField(blank=True, help_text="Blank for a whole job", max_length=32)),
                ("test_name", models.CharField(blank=True, max_length=500)),
                ("commit_sha", models.CharField(max_length=64)),
                ("observed_at", models.DateTimeField()),
                (
                    "counts_for_statistics",
                    models.BooleanField(
                        default=True,
                        help_text="False when most jobs of the failing run failed for infrastructure reasons",
                    ),
                ),
                ("reason", models.CharField(blank=True, max_length=300)),
                (
                    "failure",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="flaky_observations",
                        to="escalation.failure",
                    ),
                ),
                (
                    "repository",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="escalation.repository"
                    ),
                ),
            ],
            options={
                "ordering": ["-observed_at", "-id"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("repository", "job_name", "test_key", "commit_sha"), name="flaky_once_per_commit"
                    )
                ],
            },
        ),
    ]
