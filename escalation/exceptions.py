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
