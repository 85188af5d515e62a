"""Admin pages of the SLA engine: its heartbeats, where notifications go (channels, ticket trackers), the outbox."""

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from escalation.admin import ConfigAdmin, ReadOnlyAdmin, admin_actor
from escalation.models import EngineBeat, Notification, NotificationChannel, TicketTracker
from escalation.services import notifications as notification_services
from escalation.services.engine import beat_age, beat_is_stale
from portal.errors import PortalError


@admin.register(EngineBeat)
class EngineBeatAdmin(ReadOnlyAdmin):
    """When the worker last beat and the SLA sweep last ran; /readyz/engine answers 503 when either is stale."""

    list_display = ["name", "at", "age", "stale", "detail"]

    @admin.display(description="age")
    def age(self, obj: EngineBeat) -> str:
        seconds = beat_age(obj, timezone.now())
        return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"

    @admin.display(description="stale", boolean=True)
    def stale(self, obj: EngineBeat) -> bool | None:
        return beat_is_stale(obj, timezone.now())


class _WriteOnlySecretForm(forms.ModelForm):
    """The secret field is never rendered back; left empty on a change, the stored value stays."""

    secret_field = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stored_secret = getattr(self.instance, self.secret_field)
        field = self.fields.get(self.secret_field)
        if field is None:  # a read-only view: the admin leaves the secret out (SecretAdmin.get_fields)
            return
        field.widget = forms.PasswordInput(render_value=False)
        if self.instance.pk is not None:
            field.required = False
            field.help_text = "Stored; leave empty to keep it, type a new one to replace it."

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk is not None and not cleaned.get(self.secret_field):
            cleaned[self.secret_field] = self.stored_secret
        return cleaned


class NotificationChannelForm(_WriteOnlySecretForm):
    secret_field = "secret"  # noqa: S105 - a field name
    url = forms.URLField(
        max_length=500, required=False, assume_scheme="https", help_text=NotificationChannel.url.field.help_text
    )

    class Meta:
        model = NotificationChannel
        fields = ["team", "kind", "name", "url", "secret", "email_to", "rate_limit_per_minute", "is_enabled"]


class TicketTrackerForm(_WriteOnlySecretForm):
    secret_field = "token"  # noqa: S105 - a field name
    base_url = forms.URLField(max_length=300, assume_scheme="https", help_text=TicketTracker.base_url.field.help_text)

    class Meta:
        model = TicketTracker
        fields = ["team", "kind", "base_url", "project", "user", "token", "issue_type", "labels", "is_enabled"]


class SecretAdmin(ConfigAdmin):
    """Shows the form's secret field only to those who may change the row, and then never its value."""

    form = _WriteOnlySecretForm

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if obj is not None and not self.has_change_permission(request, obj):
            fields = [name for name in fields if name != self.form.secret_field]
        return fields


@admin.register(NotificationChannel)
class NotificationChannelAdmin(SecretAdmin):
    form = NotificationChannelForm
    list_display = ["name", "team", "kind", "is_enabled", "disabled_at", "last_error"]
    list_filter = ["kind", "is_enabled", "team"]
    search_fields = ["name", "team__name"]
    readonly_fields = ["disabled_at", "last_error"]
    actions = ["enable_and_retry"]

    @admin.action(description="Enable and retry pending", permissions=["change"])
    def enable_and_retry(self, request, queryset):
        _enable_and_retry(self, request, queryset, notification_services.channel_enable, "channel_ids")


@admin.register(TicketTracker)
class TicketTrackerAdmin(SecretAdmin):
    form = TicketTrackerForm
    list_display = ["team", "kind", "project", "is_enabled", "disabled_at", "last_error"]
    list_filter = ["kind", "is_enabled"]
    search_fields = ["project", "team__name"]
    readonly_fields = ["disabled_at", "last_error"]
    actions = ["enable_and_retry"]

    @admin.action(description="Enable and retry pending", permissions=["change"])
    def enable_and_retry(self, request, queryset):
        _enable_and_retry(self, request, queryset, notification_services.tracker_enable, "tracker_ids")


# --- notification delivery (issue 6): the outbox, and enabling a target a permanent error disabled ---


def _enable_and_retry(modeladmin, request, queryset, service, ids_name: str) -> None:
    try:
        count = service(
            **{ids_name: list(queryset.values_list("id", flat=True))}, actor=admin_actor(request), now=timezone.now()
        )
    except PortalError as exc:
        modeladmin.message_user(request, exc.detail, level=messages.ERROR)
        return
    modeladmin.message_user(request, f"{count} enabled again; their pending notifications are due now.")


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """The outbox: what was sent where, what waits for a retry, and the dead letters to retry by hand."""

    list_display = ["created_at", "subject", "status", "target", "step", "attempts", "next_attempt_at", "last_error"]
    list_filter = ["status", "step"]
    search_fields = ["subject", "uid", "dedupe_key"]
    list_select_related = ["channel__team", "tracker__team"]
    date_hierarchy = "created_at"
    actions = ["retry"]

    @admin.display(description="target")
    def target(self, obj: Notification) -> str:
        return str(obj.channel or obj.tracker)

    @admin.action(description="Retry (dead letters only)", permissions=["retry"])
    def retry(self, request, queryset):
        try:
            count = notification_services.notification_retry(
                notification_ids=list(queryset.values_list("id", flat=True)),
                actor=admin_actor(request),
                now=timezone.now(),
            )
        except PortalError as exc:
            self.message_user(request, exc.detail, level=messages.ERROR)
            return
        self.message_user(request, f"{count} notification(s) pending again; the others were not dead.")

    def has_retry_permission(self, request):
        return request.user.has_perm("escalation.retry_notification")
