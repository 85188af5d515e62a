"""Where messages go (channels, ticket trackers) and the outbox of messages to deliver."""

import uuid

from django.db import models
from django.db.models import Q

from escalation.choices import ChannelKind, EscalationStep, NotificationStatus, TrackerKind


class NotificationChannel(models.Model):
    """A team's chat channel, webhook or mailing address. Disabled by a permanent delivery error until fixed."""

    team = models.ForeignKey("escalation.Team", on_delete=models.CASCADE, related_name="channels")
    kind = models.CharField(max_length=16, choices=ChannelKind.choices)
    name = models.CharField(max_length=100, help_text="e.g. #backend-alerts")
    url = models.URLField(max_length=500, blank=True, help_text="Slack incoming webhook or JSON webhook URL")
    secret = models.CharField(max_length=200, blank=True, help_text="Webhooks: the HMAC-SHA256 signing key")
    email_to = models.CharField(max_length=500, blank=True, help_text="E-mail: addresses, comma-separated")
    rate_limit_per_minute = models.PositiveIntegerField(
        default=20, help_text="Messages a minute; the rest are batched into one message"
    )
    is_enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["team__name", "name"]

    def __str__(self) -> str:
        return f"{self.team}: {self.name} ({self.kind})"


class TicketTracker(models.Model):
    """Where a team's tickets open: a GitHub repository, a Jira project or a Linear team."""

    team = models.OneToOneField("escalation.Team", on_delete=models.CASCADE, related_name="ticket_tracker")
    kind = models.CharField(max_length=16, choices=TrackerKind.choices)
    base_url = models.URLField(
        max_length=300, help_text="https://api.github.com, https://acme.atlassian.net, https://api.linear.app"
    )
    project = models.CharField(max_length=200, help_text="owner/repo (GitHub), project key (Jira), team id (Linear)")
    user = models.CharField(max_length=200, blank=True, help_text="Jira: the account e-mail for basic auth")
    token = models.CharField(max_length=500, help_text="API token; never shown again after saving")
    issue_type = models.CharField(max_length=50, default="Task", help_text="Jira issue type")
    labels = models.CharField(max_length=200, blank=True, help_text="Comma-separated labels (GitHub, Jira)")
    is_enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"{self.team}: {self.get_kind_display()} {self.project}"


class Notification(models.Model):
    """An outbox entry, written in the transaction of its cause and delivered at least once by a task.

    ``uid`` is sent as the Notification-Id header so receivers can drop repeats. ``dedupe_key``
    makes each (group or failure, step, target) one message, however many sweeps see it.
    """

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    channel = models.ForeignKey(
        NotificationChannel, null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    tracker = models.ForeignKey(
        TicketTracker, null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    step = models.CharField(max_length=32, choices=EscalationStep.choices, blank=True)
    failures = models.ManyToManyField("escalation.Failure", blank=True, related_name="notifications")
    fallout = models.ForeignKey(
        "escalation.Fallout", null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    digest = models.ForeignKey(
        "escalation.Digest", null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    subject = models.CharField(max_length=300)
    body = models.TextField(help_text="Plain text; transports render their own format from data")
    data = models.JSONField(default=dict, blank=True, help_text="What transports render: failures, links, due times")
    dedupe_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    status = models.CharField(max_length=16, choices=NotificationStatus.choices, default=NotificationStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    batch = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="batched",
        help_text="The message this one was sent in, when the channel's rate limit batched it",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(channel__isnull=False, tracker__isnull=True)
                | Q(channel__isnull=True, tracker__isnull=False),
                name="notification_one_target",
            ),
        ]
        indexes = [
            # notifications_due(): pending entries whose next attempt has come.
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="notification_pending_idx"),
        ]
        permissions = [("retry_notification", "Can retry a dead notification")]

    def __str__(self) -> str:
        return f"{self.subject} ({self.status})"
