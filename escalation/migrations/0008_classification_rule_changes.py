"""Rule versions, and rule changes previewed on recent failures before they are applied."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import escalation.models.rules

FAILURE_TYPES = [
    ("generator_drift", "Generator drift"),
    ("unit_test", "Unit test"),
    ("integration_test", "Integration test"),
    ("database_test", "Database test"),
    ("secret_detected", "Secret detected"),
    ("vulnerability_critical", "Vulnerability (critical)"),
    ("vulnerability_high", "Vulnerability (high)"),
    ("vulnerability_medium", "Vulnerability (medium)"),
    ("ci_runner", "CI runner"),
    ("database_connectivity", "Database connectivity"),
    ("test_environment", "Test environment"),
    ("build_error", "Build error"),
    ("performance_regression", "Performance regression"),
    ("auth_change", "Auth change"),
]
KINDS = [("create", "Create"), ("update", "Update"), ("delete", "Delete")]


class Migration(migrations.Migration):
    dependencies = [
        ("escalation", "0007_classification_signatures"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="RuleChange",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("kind", models.CharField(choices=KINDS, max_length=16)),
                ("rule_name", models.CharField(max_length=100)),
                (
                    "proposed",
                    models.JSONField(help_text="The rule's fields after the change (empty for a deletion)"),
                ),
                (
                    "base_version",
                    models.PositiveIntegerField(blank=True, help_text="The rule's version when proposed", null=True),
                ),
                (
                    "base_ruleset",
                    models.BigIntegerField(
                        blank=True,
                        help_text="The newest rule version id when the preview ran; apply refuses if it moved",
                        null=True,
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("previewing", "Preview running"),
                            ("previewed", "Previewed"),
                            ("applying", "Applying"),
                            ("applied", "Applied"),
                            ("discarded", "Discarded"),
                            ("failed", "Failed"),
                        ],
                        default="previewing",
                        max_length=16,
                    ),
                ),
                ("window_start", models.DateTimeField(help_text="Failures first seen since then are previewed")),
                ("created_at", models.DateTimeField()),
                ("actor_label", models.CharField(max_length=200)),
                ("preview_started_at", models.DateTimeField(blank=True, null=True)),
                ("previewed_at", models.DateTimeField(blank=True, null=True)),
                ("progress_done", models.PositiveIntegerField(default=0)),
                ("progress_total", models.PositiveIntegerField(default=0)),
                ("affected_count", models.PositiveIntegerField(default=0)),
                ("task_id", models.CharField(blank=True, max_length=64)),
                ("error", models.TextField(blank=True)),
                ("applied_at", models.DateTimeField(blank=True, null=True)),
                ("applied_version", models.PositiveIntegerField(blank=True, null=True)),
                (
                    "applied_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "rule",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="changes",
                        to="escalation.classificationrule",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "permissions": [("apply_rulechange", "Can apply a previewed classification rule change")],
            },
        ),
        migrations.CreateModel(
            name="ClassificationRuleVersion",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("rule_name", models.CharField(help_text="Kept when the rule is deleted", max_length=100)),
                ("version", models.PositiveIntegerField()),
                ("kind", models.CharField(choices=KINDS, max_length=16)),
                (
                    "state",
                    models.JSONField(help_text="The rule's fields at this version (its last state for a deletion)"),
                ),
                ("changed_at", models.DateTimeField()),
                ("actor_label", models.CharField(max_length=200)),
                (
                    "changed_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "rule",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="versions",
                        to="escalation.classificationrule",
                    ),
                ),
                (
                    "rule_change",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="escalation.rulechange",
                    ),
                ),
            ],
            options={"verbose_name": "classification rule version", "ordering": ["-id"]},
        ),
        migrations.CreateModel(
            name="RuleChangeEffect",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("was_open", models.BooleanField()),
                ("from_type", models.CharField(choices=FAILURE_TYPES, max_length=32)),
                ("from_tags", models.JSONField(default=escalation.models.rules.empty_list)),
                ("from_classified_by", models.CharField(max_length=120)),
                ("to_type", models.CharField(choices=FAILURE_TYPES, max_length=32)),
                ("to_tags", models.JSONField(default=escalation.models.rules.empty_list)),
                ("to_classified_by", models.CharField(max_length=120)),
                (
                    "to_is_changed_rule",
                    models.BooleanField(default=False, help_text="Decided by the rule being changed"),
                ),
                ("to_evidence", models.TextField(blank=True)),
                ("found_at_apply", models.BooleanField(default=False, help_text="Opened after the preview ran")),
                (
                    "outcome",
                    models.CharField(blank=True, help_text="applied, skipped; blank until applied", max_length=16),
                ),
                ("outcome_note", models.CharField(blank=True, max_length=300)),
                (
                    "change",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="effects", to="escalation.rulechange"
                    ),
                ),
                (
                    "failure",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="escalation.failure"
                    ),
                ),
                (
                    "to_rule",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="escalation.classificationrule",
                    ),
                ),
            ],
            options={"ordering": ["id"]},
        ),
        migrations.AddConstraint(
            model_name="rulechangeeffect",
            constraint=models.UniqueConstraint(fields=("change", "failure"), name="one_effect_per_failure_and_change"),
        ),
        # rule change previews: failures first seen since the window start.
        migrations.AddIndex(
            model_name="failure",
            index=models.Index(fields=["first_seen_at"], name="failure_first_seen_idx"),
        ),
    ]
