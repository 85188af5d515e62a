"""Failures opened before the rule engine: the event they were classified from, the deciding rule's
version and their error signature (computed by escalation.services.signatures as it is today)."""

from django.db import migrations
from django.db.models import OuterRef, Subquery


def forward(apps, schema_editor):
    from escalation.services.signatures import error_signature

    Failure = apps.get_model("escalation", "Failure")
    FailureOccurrence = apps.get_model("escalation", "FailureOccurrence")
    first_event = FailureOccurrence.objects.filter(failure=OuterRef("pk")).order_by("seen_at", "id").values("event")
    Failure.objects.filter(classification_event__isnull=True).update(classification_event=Subquery(first_event[:1]))
    Failure.objects.filter(classification_rule__isnull=False, classification_rule_version__isnull=True).update(
        classification_rule_version=1
    )
    pending = Failure.objects.filter(signature="", classification_event__isnull=False)
    for failure in pending.select_related("classification_event").iterator(chunk_size=500):
        signature = error_signature(failure.classification_event.log_excerpt)
        if signature:
            Failure.objects.filter(pk=failure.pk).update(signature=signature)


class Migration(migrations.Migration):
    dependencies = [("escalation", "0009_classification_default_rules_re2")]
    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
