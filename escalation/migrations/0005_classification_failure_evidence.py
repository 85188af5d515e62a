"""A failure keeps the event it was classified from, the deciding rule's version and its tags; events keep
the fields rules match, so that a rule change can classify them again."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("escalation", "0004_classification_rule_stages")]

    operations = [
        migrations.AddField(
            model_name="cievent",
            name="event_fields",
            field=models.JSONField(
                blank=True, default=dict, help_text="Other fields classification rules may match (source, runner, ...)"
            ),
        ),
        migrations.AddField(
            model_name="failure",
            name="classification_event",
            field=models.ForeignKey(
                blank=True,
                help_text="The event whose job, step, log and fields were classified",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="escalation.cievent",
            ),
        ),
        migrations.AddField(
            model_name="failure",
            name="classification_rule_version",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="failure",
            name="tags",
            field=models.JSONField(blank=True, default=list, help_text="From the deciding rule, e.g. rate_limited"),
        ),
        migrations.AlterField(
            model_name="failure",
            name="classification_rule",
            field=models.ForeignKey(
                blank=True,
                help_text="The rule that decided the type; kept after a correction, which counts against it",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="classified_failures",
                to="escalation.classificationrule",
            ),
        ),
        migrations.AlterField(
            model_name="timelineentry",
            name="kind",
            field=models.CharField(
                choices=[
                    ("opened", "Opened"),
                    ("acknowledged", "Acknowledged"),
                    ("resolved", "Resolved"),
                    ("type_corrected", "Type corrected"),
                    ("type_confirmed", "Type confirmed"),
                    ("reclassified", "Reclassified by a rule change"),
                ],
                max_length=32,
            ),
        ),
    ]
