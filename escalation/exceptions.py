"""Domain errors of the escalation app, each named after the rule it guards."""

from portal.errors import PortalError


class InvalidMatrixFile(PortalError):
    status, code = 400, "invalid_matrix_file"


class InvalidRule(PortalError):
    status, code = 400, "invalid_rule"


class FailureNotOpen(PortalError):
    status, code = 409, "failure_not_open"


class UnknownFailureType(PortalError):
    status, code = 400, "unknown_failure_type"


class RuleChangeStale(PortalError):
    """The rules moved since the preview: applying it would change other failures than the ones shown."""

    status, code = 409, "rule_change_stale"


class RuleChangeNotReady(PortalError):
    status, code = 409, "rule_change_not_ready"


# --- CI-native ingestion (webhooks and reports) ---


class WebhookUnauthorized(PortalError):
    status, code = 401, "bad_signature"


class UnknownWebhookSource(PortalError):
    status, code = 404, "unknown_source"


class MalformedPayload(PortalError):
    status, code = 400, "malformed_payload"


class MalformedReport(PortalError):
    status, code = 400, "malformed_report"


class UnsafeXml(PortalError):
    status, code = 400, "unsafe_xml"


class WrongReportFormat(PortalError):
    status, code = 400, "wrong_format"


class RotationNotOpen(PortalError):
    status, code = 409, "rotation_not_open"
