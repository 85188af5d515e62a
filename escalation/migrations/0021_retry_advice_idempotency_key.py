"""Retry advice remembers the Idempotency-Key it was asked with, unique per source (issue 7)."""

from django.db import migrations, models
from django.db.models import Q


class Migration(migrations.Migration):
    dependencies = [
        ("escalation", "0020_default_fallout_rules"),
    ]

    operations = [
        migrations.AddField(
            model_name="retryadvice",
            name="idempotency_key",
            field=models.CharField(
                blank=True,
                help_text="The Idempotency-Key header: the same key answers this advice again",
                max_length=255,
            ),
        ),
        migrations.AddConstraint(
            model_name="retryadvice",
            constraint=models.UniqueConstraint(
                condition=~Q(idempotency_key=""),
                fields=("source", "idempotency_key"),
                name="retry_advice_idempotency_key",
            ),
        ),
    ]
