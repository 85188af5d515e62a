"""Each failure's normalised error signature, indexed for the top-signatures list and similar failures."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("escalation", "0006_classification_triage")]

    operations = [
        migrations.AddField(
            model_name="failure",
            name="signature",
            field=models.CharField(
                blank=True,
                help_text="The normalised error line of the log excerpt; same error, same signature",
                max_length=255,
            ),
        ),
        migrations.AddIndex(
            model_name="failure",
            index=models.Index(fields=["signature", "first_seen_at"], name="failure_signature_idx"),
        ),
    ]
