"""Domain errors and the one handler that turns any API error into {"error": code, "detail": ...}."""

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response


class PortalError(Exception):
    """A broken rule. Subclasses name the rule and carry the HTTP status it maps to."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, **extra):
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class BadInput(PortalError):
    status, code = 400, "bad_input"


class NulByte(PortalError):
    status, code = 400, "nul_byte"


class PayloadTooLarge(PortalError):
    status, code = 413, "payload_too_large"


class RoleRequired(PortalError):
    status, code = 403, "role_required"


class InvalidState(PortalError):
    status, code = 409, "invalid_state"


_DRF_CODES = {
    exceptions.ParseError: "malformed_json",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.Throttled: "throttled",
}


def api_exception_handler(exc, context):
    from rest_framework.views import exception_handler  # DRF's views import the auth classes, which import us

    if isinstance(exc, PortalError):
        return Response({"error": exc.code, "detail": exc.detail, **exc.extra}, status=exc.status)
    if isinstance(exc, DjangoValidationError):
        return Response({"error": "invalid", "detail": "; ".join(exc.messages)}, status=400)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"error": "invalid", "detail": _first_message(exc.detail), "fields": exc.detail}
    else:
        code = _DRF_CODES.get(type(exc), getattr(exc, "default_code", "error"))
        response.data = {"error": code, "detail": str(exc.detail)}
    return response


def _first_message(detail) -> str:
    """A one-line summary naming the first offending field."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            inner = _first_message(value)
            return inner if field == "non_field_errors" else f"{field}: {inner}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)
