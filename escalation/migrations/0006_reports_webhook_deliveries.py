"""Webhook deliveries (replay de-duplication) and the runs several webhook kinds describe."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("escalation", "0005_reports_resolution_superseded"),
    ]

    operations = [
        migrations.CreateModel(
            name="WebhookDelivery",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("delivery_id", models.CharField(help_text="X-GitHub-Delivery or X-Gitlab-Event-UUID", max_length=200)),
                ("event", models.CharField(max_length=64)),
                ("action", models.CharField(blank=True, max_length=64)),
                (
                    "outcome",
                    models.CharField(choices=[("processed", "Processed"), ("ignored", "Ignored")], max_length=16),
                ),
                ("reason", models.CharField(blank=True, max_length=300)),
                ("result", models.JSONField(blank=True, default=dict, help_text="The answer the delivery got")),
                ("received_at", models.DateTimeField()),
                (
                    "source",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="deliveries",
                        to="escalation.ingestsource",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "webhook deliveries",
                "ordering": ["-received_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="WebhookRun",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("repository", models.CharField(max_length=255)),
                ("run_id", models.CharField(help_text="The run id events are stored under", max_length=200)),
                ("attempt", models.PositiveIntegerField(default=1)),
                (
                    "run_level_job",
                    models.CharField(
                        blank=True,
                        help_text="The stand-in job of a run-level failure, when one was opened",
                        max_length=255,
                    ),
                ),
                ("created_at", models.DateTimeField()),
                (
                    "source",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="webhook_runs",
                        to="escalation.ingestsource",
                    ),
                ),
            ],
            options={
                "verbose_name": "webhook run",
            },
        ),
        migrations.CreateModel(
            name="WebhookAlias",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("alias", models.CharField(max_length=255)),
                ("job_name", models.CharField(blank=True, help_text="For a check run: its job", max_length=255)),
                (
                    "source",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="escalation.ingestsource"
                    ),
                ),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="aliases", to="escalation.webhookrun"
                    ),
                ),
            ],
        ),
        migrations.AddConstraint(
            model_name="webhookdelivery",
            constraint=models.UniqueConstraint(fields=("source", "delivery_id"), name="webhook_delivery_once"),
        ),
        migrations.AddConstraint(
            model_name="webhookalias",
            constraint=models.UniqueConstraint(fields=("source", "alias"), name="webhook_alias_once"),
        ),
    ]
