"""Report uploads: the raw file is the body, the run is named in the query string."""

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from escalation.api.authentication import HasScope
from escalation.choices import ReportKind, Scope
from escalation.services.reports.junit import junit_store
from escalation.services.reports.sarif import sarif_store
from escalation.services.reports.secrets import FORMATS, secrets_format_detect, secrets_store
from escalation.services.reports.trivy import trivy_store
from escalation.services.reports.upload import RunTarget, body_spool, report_ingest


class ReportTargetSerializer(serializers.Serializer):
    """The run and job a report belongs to. Unknown parameters are refused, not ignored."""

    repository = serializers.CharField(max_length=255)
    branch = serializers.CharField(max_length=255)
    commit = serializers.CharField(max_length=64)
    run_id = serializers.CharField(max_length=200)
    job = serializers.CharField(max_length=255)
    attempt = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False, default=1)
    source = serializers.CharField(max_length=100, required=False, default="", help_text="The CI system")
    commit_author = serializers.CharField(max_length=254, required=False, default="")

    def to_internal_value(self, data):
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({key: ["unknown query parameter"] for key in unknown})
        for key, value in data.items():
            if "\x00" in value:
                raise serializers.ValidationError({key: ["contains a NUL character"]})
        return super().to_internal_value(data)


class ScanTargetSerializer(ReportTargetSerializer):
    category = serializers.CharField(
        max_length=200, required=False, default="", help_text="Separates scans of one tool (e.g. per image)"
    )


class SecretsTargetSerializer(ReportTargetSerializer):
    format = serializers.ChoiceField(choices=FORMATS, required=False, help_text="Detected when absent")


_RECEIPT = {201: OpenApiTypes.OBJECT, 200: OpenApiTypes.OBJECT}


class _JsonOnly(DefaultContentNegotiation):
    """Receipts are JSON; ``?format=`` names the report's format here, not DRF's renderer."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class _ReportView(APIView):
    permission_classes = [HasScope]
    required_scope = Scope.INGEST
    parser_classes: list = []  # the body is the report file itself, read by the service
    content_negotiation_class = _JsonOnly
    target_serializer = ReportTargetSerializer
    kind = ""

    def post(self, request):
        params = self.target_serializer(data=request.query_params.dict())
        params.is_valid(raise_exception=True)
        options = dict(params.validated_data)
        target = RunTarget(
            **{key: options.pop(key) for key in ("repository", "branch", "commit", "run_id", "job", "attempt")},
            ci_system=options.pop("source"),
            commit_author=options.pop("commit_author"),
        )
        declared = request.META.get("CONTENT_LENGTH") or ""
        body = body_spool(
            stream=request.stream or _Empty(),
            limit=settings.PORTAL_MAX_REPORT_BYTES,
            content_length=int(declared) if declared.isdigit() else None,
        )
        with body.file:
            report_format, store = self.store_for(body, options)
            receipt, created = report_ingest(
                ingest_source=request.user,
                kind=self.kind,
                report_format=report_format,
                target=target,
                body=body,
                now=timezone.now(),
                store=store,
            )
        return Response(receipt, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def store_for(self, body, options):  # pragma: no cover - each view names its store
        raise NotImplementedError


class JUnitReportView(_ReportView):
    """Upload a JUnit XML report (any common runner)."""

    kind = ReportKind.JUNIT

    @extend_schema(
        request={"application/xml": OpenApiTypes.BINARY},
        parameters=[ReportTargetSerializer],
        responses=_RECEIPT,
        description=(
            "Answers 201 with tests, passed, failures, errors and skipped counted from the test cases, the failures "
            "opened, updated and recovered, flaky tests and warnings (zero_tests); the same file again answers 200 "
            "with duplicate: true. Entity declarations and external entities are refused with 400."
        ),
    )
    def post(self, request):
        return super().post(request)

    def store_for(self, body, options):
        return "junit", junit_store


class SarifReportView(_ReportView):
    """Upload a SARIF 2.1.0 log from any tool."""

    kind = ReportKind.SARIF
    target_serializer = ScanTargetSerializer

    @extend_schema(
        request={"application/sarif+json": OpenApiTypes.BINARY},
        parameters=[ScanTargetSerializer],
        responses=_RECEIPT,
        description="Answers 201 with results and counts by severity; a log without runs answers 400.",
    )
    def post(self, request):
        return super().post(request)

    def store_for(self, body, options):
        category = options.get("category", "")
        return "sarif", lambda upload, body: sarif_store(upload, body, category=category)


class TrivyReportView(_ReportView):
    """Upload a Trivy JSON report (schema version 2)."""

    kind = ReportKind.TRIVY
    target_serializer = ScanTargetSerializer

    @extend_schema(
        request={"application/json": OpenApiTypes.BINARY},
        parameters=[ScanTargetSerializer],
        responses=_RECEIPT,
        description="Vulnerabilities, secrets and failed misconfigurations, mapped like SARIF findings.",
    )
    def post(self, request):
        return super().post(request)

    def store_for(self, body, options):
        category = options.get("category", "")
        return "trivy", lambda upload, body: trivy_store(upload, body, category=category)


class SecretsReportView(_ReportView):
    """Upload a gitleaks, trufflehog or detect-secrets report."""

    kind = ReportKind.SECRETS
    target_serializer = SecretsTargetSerializer

    @extend_schema(
        request={"application/json": OpenApiTypes.BINARY},
        parameters=[SecretsTargetSerializer],
        responses=_RECEIPT,
        description=(
            "Each finding opens secret_detected with a credential-rotation task for the committer and Security. "
            "The secret itself is never stored."
        ),
    )
    def post(self, request):
        return super().post(request)

    def store_for(self, body, options):
        report_format = options.get("format") or secrets_format_detect(body)
        return report_format, lambda upload, body: secrets_store(upload, body, report_format=report_format)


class _Empty:
    @staticmethod
    def read(size: int = -1) -> bytes:
        return b""
