"""Classification rules get a precedence stage, tags and a version number (RE2 patterns)."""

from django.db import migrations, models

import escalation.models.rules


class Migration(migrations.Migration):
    dependencies = [("escalation", "0003_default_classification_rules")]

    operations = [
        migrations.AlterModelOptions(
            name="classificationrule",
            options={"ordering": ["stage", "position", "id"]},
        ),
        migrations.AddField(
            model_name="classificationrule",
            name="stage",
            field=models.PositiveSmallIntegerField(
                choices=[
                    (10, "1. Infrastructure causes in the log"),
                    (20, "2. Other log patterns"),
                    (30, "3. Job and step names, changed files, event fields"),
                    (40, "4. Generic test-runner summaries in the log"),
                ],
                default=20,
                help_text="Precedence: an earlier stage always wins over a later one, whatever the positions",
            ),
        ),
        migrations.AddField(
            model_name="classificationrule",
            name="tags",
            field=models.JSONField(
                blank=True,
                default=escalation.models.rules.empty_list,
                help_text="Tags the failure gets, e.g. rate_limited, flaky_suspect",
            ),
        ),
        migrations.AddField(
            model_name="classificationrule",
            name="version",
            field=models.PositiveIntegerField(default=1, editable=False),
        ),
        migrations.AlterField(
            model_name="classificationrule",
            name="field",
            field=models.CharField(
                choices=[
                    ("job", "Job name"),
                    ("step", "Step name"),
                    ("log", "Log excerpt"),
                    ("changed_files", "Changed files (one path a line)"),
                    ("event_field", "Event field"),
                ],
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="classificationrule",
            name="pattern",
            field=models.TextField(
                help_text="RE2 regular expression (no backreferences or look-arounds), case-insensitive; "
                "^ and $ match at line ends"
            ),
        ),
        migrations.AlterField(
            model_name="classificationrule",
            name="position",
            field=models.PositiveIntegerField(default=1000, help_text="Order within the stage; lowest first"),
        ),
    ]
