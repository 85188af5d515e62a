"""Uploaded reports, their test results and findings, and flags on runs."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("escalation", "0006_reports_webhook_deliveries"),
    ]

    operations = [
        migrations.CreateModel(
            name="Report",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("junit", "JUnit XML"),
                            ("sarif", "SARIF"),
                            ("trivy", "Trivy JSON"),
                            ("secrets", "Secret-scanner report"),
                        ],
                        max_length=16,
                    ),
                ),
                ("format", models.CharField(help_text="The dialect detected or named, e.g. gitleaks", max_length=32)),
                (
                    "digest",
                    models.CharField(help_text="sha256 of the body: the same upload is stored once", max_length=64),
                ),
                ("size_bytes", models.PositiveBigIntegerField()),
                ("received_at", models.DateTimeField()),
                ("tests", models.PositiveIntegerField(default=0)),
                ("passed", models.PositiveIntegerField(default=0)),
                ("failures", models.PositiveIntegerField(default=0)),
                ("errors", models.PositiveIntegerField(default=0)),
                ("skipped", models.PositiveIntegerField(default=0)),
                ("results", models.PositiveIntegerField(default=0, help_text="Findings in the report")),
                ("by_severity", models.JSONField(blank=True, default=dict)),
                ("has_zero_tests", models.BooleanField(default=False)),
                ("receipt", models.JSONField(default=dict, help_text="The answer the upload got")),
                (
                    "job",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="reports", to="escalation.cijob"
                    ),
                ),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="reports", to="escalation.cirun"
                    ),
                ),
                (
                    "source",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="reports",
                        to="escalation.ingestsource",
                    ),
                ),
            ],
            options={
                "ordering": ["-received_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="Finding",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("tool", models.CharField(max_length=200)),
                ("category", models.CharField(blank=True, max_length=200)),
                ("rule_id", models.CharField(blank=True, max_length=300)),
                ("title", models.CharField(blank=True, max_length=500)),
                (
                    "severity",
                    models.CharField(
                        choices=[
                            ("critical", "Critical"),
                            ("high", "High"),
                            ("medium", "Medium"),
                            ("low", "Low"),
                            ("none", "None / informational"),
                        ],
                        max_length=8,
                    ),
                ),
                ("score", models.FloatField(blank=True, help_text="CVSS / security-severity, when given", null=True)),
                (
                    "level",
                    models.CharField(blank=True, help_text="SARIF level or the tool's own severity", max_length=16),
                ),
                ("location", models.CharField(blank=True, max_length=1000)),
                ("line", models.PositiveIntegerField(blank=True, null=True)),
                (
                    "key",
                    models.CharField(
                        help_text="Hash of the finding's identity within tool and category", max_length=64
                    ),
                ),
                ("is_secret", models.BooleanField(default=False)),
                ("is_suppressed", models.BooleanField(default=False)),
                ("commit_sha", models.CharField(blank=True, max_length=64)),
                ("committer", models.CharField(blank=True, max_length=254)),
                ("message", models.TextField(blank=True)),
                ("tags", models.JSONField(blank=True, default=list)),
                (
                    "failure",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="findings",
                        to="escalation.failure",
                    ),
                ),
                (
                    "report",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="findings", to="escalation.report"
                    ),
                ),
            ],
            options={
                "ordering": ["id"],
            },
        ),
        migrations.CreateModel(
            name="RunFlag",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("code", models.CharField(max_length=32)),
                ("detail", models.CharField(blank=True, max_length=300)),
                ("created_at", models.DateTimeField()),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="flags", to="escalation.cirun"
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="TestResult",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "test_key",
                    models.CharField(help_text="Hash of suite, class and name: the test's identity", max_length=32),
                ),
                ("suite", models.CharField(blank=True, max_length=500)),
                ("classname", models.CharField(blank=True, max_length=500)),
                ("name", models.CharField(blank=True, max_length=500)),
                ("file", models.CharField(blank=True, max_length=500)),
                (
                    "outcome",
                    models.CharField(
                        choices=[
                            ("passed", "Passed"),
                            ("failed", "Failed"),
                            ("error", "Error"),
                            ("skipped", "Skipped"),
                        ],
                        max_length=8,
                    ),
                ),
                ("duration", models.FloatField(blank=True, help_text="Seconds", null=True)),
                ("message", models.TextField(blank=True, help_text="The failure's message and the start of its text")),
                (
                    "report",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="test_results",
                        to="escalation.report",
                    ),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="report",
            index=models.Index(fields=["run", "kind"], name="report_run_kind_idx"),
        ),
        migrations.AddConstraint(
            model_name="report",
            constraint=models.UniqueConstraint(fields=("job", "kind", "digest"), name="report_once_per_body"),
        ),
        migrations.AddConstraint(
            model_name="runflag",
            constraint=models.UniqueConstraint(fields=("run", "code"), name="run_flag_once"),
        ),
        migrations.AddIndex(
            model_name="testresult",
            index=models.Index(fields=["report", "test_key"], name="testresult_report_key_idx"),
        ),
    ]
