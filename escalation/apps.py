from django.apps import AppConfig
from django.db.models.signals import post_migrate


class EscalationConfig(AppConfig):
    name = "escalation"
    verbose_name = "Escalation"

    def ready(self) -> None:
        from escalation import lookups  # noqa: F401 - registers __in_array
        from escalation.api import schema  # noqa: F401 - registers the OpenAPI auth extension

        post_migrate.connect(_schedules_ensure, sender=self, dispatch_uid="escalation.schedules_ensure")


def _schedules_ensure(sender, using, **kwargs) -> None:
    """After every migrate: the django-q2 schedules declared in escalation.services.engine.SCHEDULES."""
    from escalation.services.engine import schedules_ensure

    schedules_ensure(using=using)
