"""GitHub and GitLab webhook endpoints: they verify the sender themselves (no bearer token)."""

import json
from urllib.parse import parse_qs

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from escalation.choices import SourceKind
from escalation.exceptions import MalformedPayload
from escalation.services.webhooks.common import (
    delivery_key,
    github_signature_verify,
    gitlab_token_verify,
    webhook_source,
)
from escalation.services.webhooks.github import github_webhook_handle
from escalation.services.webhooks.gitlab import gitlab_webhook_handle
from portal.errors import NulByte, PayloadTooLarge


def _body(request) -> bytes:
    """The raw body (signatures cover it byte for byte), refused past the webhook limit."""
    limit = settings.PORTAL_MAX_WEBHOOK_BYTES
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body ({declared} bytes) is larger than the webhook limit of {limit} bytes")
    stream = request.stream
    raw = stream.read(limit + 1) if stream is not None else b""
    if len(raw) > limit:
        raise PayloadTooLarge(f"the body is larger than the webhook limit of {limit} bytes")
    return raw


def _payload(raw: bytes, content_type: str) -> object:
    """JSON, or GitHub's form encoding (payload=<json>)."""
    if b"\x00" in raw or b"\\u0000" in raw:
        raise NulByte("the body contains a NUL character")
    text = raw.decode("utf-8", errors="strict") if raw else ""
    if content_type.startswith("application/x-www-form-urlencoded"):
        text = (parse_qs(text).get("payload") or [""])[0]
    try:
        return json.loads(text)
    except RecursionError:
        raise MalformedPayload("malformed JSON: nested too deeply") from None
    except ValueError as exc:
        raise MalformedPayload(f"malformed JSON: {exc}") from None


_WEBHOOK_SCHEMA = {
    "request": OpenApiTypes.OBJECT,
    "responses": {200: OpenApiTypes.OBJECT, 202: OpenApiTypes.OBJECT},
}


class GitHubWebhookView(APIView):
    """GitHub: workflow_job, workflow_run, check_run, check_suite and ping, signed with the source's secret."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes: list = []

    @extend_schema(
        **_WEBHOOK_SCHEMA,
        parameters=[
            OpenApiParameter("X-GitHub-Event", str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("X-GitHub-Delivery", str, OpenApiParameter.HEADER),
            OpenApiParameter("X-Hub-Signature-256", str, OpenApiParameter.HEADER, required=True),
        ],
        description=(
            "Answers 200 with what the delivery did, 202 with `ignored` and the reason for event kinds, actions "
            "and conclusions that report nothing, 200 with `duplicate: true` for a replayed X-GitHub-Delivery, "
            "401 for a bad or missing signature."
        ),
    )
    def post(self, request, source: str):
        ingest_source = webhook_source(name=source, kind=SourceKind.GITHUB)
        raw = _body(request)
        github_signature_verify(
            source=ingest_source, body=raw, signature=request.headers.get("X-Hub-Signature-256", "")
        )
        event = request.headers.get("X-GitHub-Event", "").strip()
        if not event:
            raise MalformedPayload("the X-GitHub-Event header is missing")
        answer = github_webhook_handle(
            source=ingest_source,
            event=event[:64],
            delivery_id=delivery_key(request.headers.get("X-GitHub-Delivery", ""), raw),
            payload=_payload(raw, request.content_type or ""),
            now=timezone.now(),
        )
        return Response(answer.body, status=answer.status_code)


class GitLabWebhookView(APIView):
    """GitLab: Pipeline Hook and Job Hook (and the older Build Hook), with the source's secret token."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes: list = []

    @extend_schema(
        **_WEBHOOK_SCHEMA,
        parameters=[
            OpenApiParameter("X-Gitlab-Token", str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("X-Gitlab-Event", str, OpenApiParameter.HEADER),
            OpenApiParameter("X-Gitlab-Event-UUID", str, OpenApiParameter.HEADER),
        ],
        description=(
            "Answers 200 with what the delivery did, 202 with `ignored` and the reason for other hooks, "
            "200 with `duplicate: true` for a replayed X-Gitlab-Event-UUID, 401 for a wrong or missing token."
        ),
    )
    def post(self, request, source: str):
        ingest_source = webhook_source(name=source, kind=SourceKind.GITLAB)
        raw = _body(request)
        gitlab_token_verify(source=ingest_source, token=request.headers.get("X-Gitlab-Token", ""))
        uuid = request.headers.get("X-Gitlab-Event-UUID", "") or request.headers.get("Idempotency-Key", "")
        answer = gitlab_webhook_handle(
            source=ingest_source,
            event=request.headers.get("X-Gitlab-Event", "").strip()[:64],
            delivery_id=delivery_key(uuid, raw),
            payload=_payload(raw, request.content_type or ""),
            now=timezone.now(),
        )
        return Response(answer.body, status=answer.status_code)
