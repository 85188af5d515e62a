"""Domain errors of fallouts, each named after the rule it guards."""

from portal.errors import PortalError


class InvalidFalloutRule(PortalError):
    """A rule row its detector cannot run: unknown code, unsupported scope, a missing ratio or sample count."""

    status, code = 400, "invalid_fallout_rule"


class FalloutNotDecidable(PortalError):
    """Only a proposed fallout is confirmed or dismissed, only an open one closed."""

    status, code = 409, "fallout_not_decidable"


class FalloutReasonRequired(PortalError):
    status, code = 400, "fallout_reason_required"
