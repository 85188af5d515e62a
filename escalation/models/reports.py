"""What CI-native ingestion keeps: webhook deliveries, uploaded reports, test results, findings,
credential-rotation tasks, flaky observations and flags on runs."""

from django.conf import settings
from django.db import models

from escalation.choices import ReportKind, RotationStatus, Severity, TestOutcome, WebhookOutcome


class WebhookDelivery(models.Model):
    """One webhook delivery a source sent, kept so that a replayed delivery id stores nothing twice."""

    # No index of its own: webhook_delivery_once leads with this column.
    source = models.ForeignKey(
        "escalation.IngestSource", on_delete=models.PROTECT, related_name="deliveries", db_index=False
    )
    delivery_id = models.CharField(max_length=200, help_text="X-GitHub-Delivery or X-Gitlab-Event-UUID")
    event = models.CharField(max_length=64)
    action = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16, choices=WebhookOutcome.choices)
    reason = models.CharField(max_length=300, blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="The answer the delivery got")
    received_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "delivery_id"], name="webhook_delivery_once")]
        verbose_name_plural = "webhook deliveries"
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.event} {self.delivery_id} ({self.outcome})"


class WebhookRun(models.Model):
    """The one CI run that several webhook kinds (workflow_run, workflow_job, check_run, check_suite,
    pipeline and job hooks) describe, whichever of them arrives first."""

    source = models.ForeignKey("escalation.IngestSource", on_delete=models.CASCADE, related_name="webhook_runs")
    repository = models.CharField(max_length=255)
    run_id = models.CharField(max_length=200, help_text="The run id events are stored under")
    attempt = models.PositiveIntegerField(default=1)
    run_level_job = models.CharField(
        max_length=255, blank=True, help_text="The stand-in job of a run-level failure, when one was opened"
    )
    created_at = models.DateTimeField()

    class Meta:
        verbose_name = "webhook run"

    def __str__(self) -> str:
        return f"{self.repository} run {self.run_id} #{self.attempt}"


class WebhookAlias(models.Model):
    """An id a webhook kind knows a run by (workflow run + attempt, check suite, check run, pipeline)."""

    # No index of its own: webhook_alias_once leads with this column.
    source = models.ForeignKey("escalation.IngestSource", on_delete=models.CASCADE, related_name="+", db_index=False)
    alias = models.CharField(max_length=255)
    run = models.ForeignKey(WebhookRun, on_delete=models.CASCADE, related_name="aliases")
    job_name = models.CharField(max_length=255, blank=True, help_text="For a check run: its job")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "alias"], name="webhook_alias_once")]

    def __str__(self) -> str:
        return self.alias


class Report(models.Model):
    """One uploaded report file (JUnit, SARIF, Trivy, secret scanner) of a CI job, stored once per body."""

    source = models.ForeignKey("escalation.IngestSource", on_delete=models.PROTECT, related_name="reports")
    kind = models.CharField(max_length=16, choices=ReportKind.choices)
    format = models.CharField(max_length=32, help_text="The dialect detected or named, e.g. gitleaks")
    # No index of its own: report_run_kind_idx leads with this column.
    run = models.ForeignKey("escalation.CIRun", on_delete=models.PROTECT, related_name="reports", db_index=False)
    # No index of its own: report_once_per_body leads with this column.
    job = models.ForeignKey("escalation.CIJob", on_delete=models.PROTECT, related_name="reports", db_index=False)
    digest = models.CharField(max_length=64, help_text="sha256 of the body: the same upload is stored once")
    size_bytes = models.PositiveBigIntegerField()
    received_at = models.DateTimeField()
    tests = models.PositiveIntegerField(default=0)
    passed = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    results = models.PositiveIntegerField(default=0, help_text="Findings in the report")
    by_severity = models.JSONField(default=dict, blank=True)
    has_zero_tests = models.BooleanField(default=False)
    receipt = models.JSONField(default=dict, help_text="The answer the upload got")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "kind", "digest"], name="report_once_per_body")]
        indexes = [
            # Flaky detection: the JUnit reports of one repository and commit (through the run).
            models.Index(fields=["run", "kind"], name="report_run_kind_idx"),
        ]
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} of {self.job_id}"


class TestResult(models.Model):
    """One test case of a JUnit report, as the runner reported it."""

    __test__ = False  # not a pytest test class

    # No database constraint: a report's test results are written only by its upload, in the transaction that
    # created the report, and are deleted with it by Django (CASCADE). PostgreSQL checked the constraint for
    # every row after the report's COPY, a quarter of a large report's ingestion time.
    report = models.ForeignKey(
        Report, on_delete=models.CASCADE, related_name="test_results", db_index=False, db_constraint=False
    )
    test_key = models.CharField(max_length=32, help_text="Hash of suite, class and name: the test's identity")
    suite = models.CharField(max_length=500, blank=True)
    classname = models.CharField(max_length=500, blank=True)
    name = models.CharField(max_length=500, blank=True)
    file = models.CharField(max_length=500, blank=True)
    outcome = models.CharField(max_length=8, choices=TestOutcome.choices)
    duration = models.FloatField(null=True, blank=True, help_text="Seconds")
    message = models.TextField(blank=True, help_text="The failure's message and the start of its text")

    class Meta:
        indexes = [
            # Flaky detection looks a report's tests up by identity.
            models.Index(fields=["report", "test_key"], name="testresult_report_key_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.classname or self.suite} {self.name} ({self.outcome})"


class Finding(models.Model):
    """One result of a security or secret scan. Secrets are never stored: only where they are."""

    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="findings")
    failure = models.ForeignKey(
        "escalation.Failure", null=True, blank=True, on_delete=models.SET_NULL, related_name="findings"
    )
    tool = models.CharField(max_length=200)
    category = models.CharField(max_length=200, blank=True)
    rule_id = models.CharField(max_length=300, blank=True)
    title = models.CharField(max_length=500, blank=True)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    score = models.FloatField(null=True, blank=True, help_text="CVSS / security-severity, when given")
    level = models.CharField(max_length=16, blank=True, help_text="SARIF level or the tool's own severity")
    location = models.CharField(max_length=1000, blank=True)
    line = models.PositiveIntegerField(null=True, blank=True)
    key = models.CharField(max_length=64, help_text="Hash of the finding's identity within tool and category")
    is_secret = models.BooleanField(default=False)
    is_suppressed = models.BooleanField(default=False)
    commit_sha = models.CharField(max_length=64, blank=True)
    committer = models.CharField(max_length=254, blank=True)
    message = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.tool} {self.rule_id} {self.location}"


class CredentialRotation(models.Model):
    """The task a detected secret opens at once: rotate the credential. Confirming it resolves the failure."""

    failure = models.OneToOneField("escalation.Failure", on_delete=models.CASCADE, related_name="credential_rotation")
    committer = models.CharField(max_length=254, blank=True, help_text="Who committed the secret, as reported")
    assignee = models.ForeignKey(
        "escalation.Person", null=True, blank=True, on_delete=models.SET_NULL, related_name="rotations"
    )
    assignee_team = models.ForeignKey(
        "escalation.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    security_team = models.ForeignKey(
        "escalation.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=RotationStatus.choices, default=RotationStatus.OPEN)
    opened_at = models.DateTimeField()
    confirmed_at = models.DateTimeField(null=True, blank=True)
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]

    def __str__(self) -> str:
        return f"Rotate the credential of failure #{self.failure_id} ({self.status})"


class FlakyObservation(models.Model):
    """A job or test that failed and passed on one commit: possibly flaky."""

    # No index of its own: flaky_once_per_commit leads with this column.
    repository = models.ForeignKey("escalation.Repository", on_delete=models.CASCADE, related_name="+", db_index=False)
    job_name = models.CharField(max_length=255)
    test_key = models.CharField(max_length=32, blank=True, help_text="Blank for a whole job")
    test_name = models.CharField(max_length=500, blank=True)
    commit_sha = models.CharField(max_length=64)
    failure = models.ForeignKey(
        "escalation.Failure", null=True, blank=True, on_delete=models.SET_NULL, related_name="flaky_observations"
    )
    observed_at = models.DateTimeField()
    counts_for_statistics = models.BooleanField(
        default=True, help_text="False when most jobs of the failing run failed for infrastructure reasons"
    )
    reason = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["repository", "job_name", "test_key", "commit_sha"], name="flaky_once_per_commit"
            )
        ]
        ordering = ["-observed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.job_name} {self.test_name} on {self.commit_sha[:12]}".strip()


class RunFlag(models.Model):
    """Something about a run that people should see, e.g. a report that held zero tests."""

    # No index of its own: run_flag_once leads with this column.
    run = models.ForeignKey("escalation.CIRun", on_delete=models.CASCADE, related_name="flags", db_index=False)
    code = models.CharField(max_length=32)
    detail = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "code"], name="run_flag_once")]

    def __str__(self) -> str:
        return f"{self.code} on {self.run_id}"
