"""What CI systems send: sources, runs, jobs and the events that report them."""

from django.db import models

from escalation.choices import JobStatus, SourceKind


class IngestSource(models.Model):
    """A CI system allowed to report, identified by a hashed bearer token with scopes."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=SourceKind.choices, default=SourceKind.GENERIC)
    token_prefix = models.CharField(max_length=16, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list)
    # GitHub signs deliveries with it (HMAC) and GitLab sends it as a token: it must be kept in clear.
    # portal.audit.SECRET_FIELDS keeps it out of the audit log; the admin and the API never show it.
    webhook_secret = models.CharField(max_length=255, blank=True, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    # DRF treats the authenticated principal as a user; a source is one.
    is_authenticated = True


# Foreign keys between the rows one CI event stores (its run, job and event; the failure, occurrence and
# timeline entry it opens or adds) have no constraint in the database (db_constraint=False). Ingestion
# writes those rows in one statement that takes each key from the row it has just stored or locked, so
# PostgreSQL's check after every row could never fail, and it cost a tenth of the database's CPU per
# event (a trigger, a query and a row lock for each key). Deletes still go through Django, which applies
# on_delete (PROTECT, CASCADE) itself. Keys to rows that people edit and delete (repositories, teams,
# rules, persons) keep their constraint.


class CIRun(models.Model):
    """One attempt of a CI run (pipeline / workflow run) on a commit."""

    # No index of its own: run_natural_key leads with this column. No constraint: the authenticated source.
    source = models.ForeignKey(
        IngestSource, on_delete=models.PROTECT, related_name="runs", db_index=False, db_constraint=False
    )
    ci_system = models.CharField(max_length=100, help_text="The event's `source` field")
    repository = models.ForeignKey("escalation.Repository", on_delete=models.PROTECT, related_name="runs")
    run_id = models.CharField(max_length=200)
    attempt = models.PositiveIntegerField(default=1)
    branch = models.CharField(max_length=255)
    commit_sha = models.CharField(max_length=64)
    commit_author = models.CharField(max_length=254, blank=True)
    changed_files = models.JSONField(null=True, blank=True)
    url = models.URLField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "ci_system", "repository", "run_id", "attempt"], name="run_natural_key"
            )
        ]
        verbose_name = "CI run"

    def __str__(self) -> str:
        return f"{self.repository} run {self.run_id} #{self.attempt}"


class CIJob(models.Model):
    """A job of a CI run, with its latest reported status."""

    # No index of its own: job_per_run leads with this column. No constraint: stored with its run.
    run = models.ForeignKey(CIRun, on_delete=models.CASCADE, related_name="jobs", db_index=False, db_constraint=False)
    name = models.CharField(max_length=255)
    step = models.CharField(max_length=255, blank=True)
    runner_label = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=JobStatus.choices)
    url = models.URLField(max_length=500, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="job_per_run")]
        verbose_name = "CI job"

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


# The unique key that stores an event once (services name it when it refuses a concurrent duplicate).
EVENT_ONCE = "event_idempotency_key"


class CIEvent(models.Model):
    """One accepted report of a job's outcome. The idempotency key makes re-deliveries no-ops."""

    # No index of its own: event_idempotency_key leads with this column.
    source = models.ForeignKey(
        IngestSource, on_delete=models.PROTECT, related_name="events", db_index=False, db_constraint=False
    )
    idempotency_key = models.CharField(max_length=255)
    job = models.ForeignKey(CIJob, on_delete=models.CASCADE, related_name="events", db_constraint=False)
    status = models.CharField(max_length=16, choices=JobStatus.choices)
    step = models.CharField(max_length=255, blank=True)
    type_hint = models.CharField(max_length=32, blank=True)
    log_excerpt = models.TextField(blank=True)
    event_fields = models.JSONField(
        default=dict, blank=True, help_text="Other fields classification rules may match (source, runner, ...)"
    )
    received_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "idempotency_key"], name=EVENT_ONCE)]
        verbose_name = "CI event"

    def __str__(self) -> str:
        return f"{self.job} {self.status} ({self.idempotency_key})"
