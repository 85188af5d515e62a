"""CI authenticates with `Authorization: Bearer <token>`; views name the scope they need."""

from rest_framework import authentication, exceptions, permissions

from escalation.models import IngestSource
from escalation.services.sources import source_authenticate


class SourceTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, token = header.partition(" ")
        if keyword != self.keyword or not token.strip():
            raise exceptions.AuthenticationFailed("the Authorization header must be 'Bearer <token>'")
        source = source_authenticate(token.strip())
        if source is None:
            raise exceptions.AuthenticationFailed("the token is unknown or revoked")
        return source, source

    def authenticate_header(self, request):
        return self.keyword


class HasScope(permissions.BasePermission):
    """A source token must carry the view's scope; a logged-in user needs the view's model permission."""

    message = "the token lacks the required scope"

    def has_permission(self, request, view):
        scope = view.required_scope
        if isinstance(request.user, IngestSource):
            if scope not in request.user.scopes:
                self.message = f"the token lacks the '{scope}' scope"
                return False
            return True
        user_permission = getattr(view, "user_permission", None)
        return bool(
            request.user
            and request.user.is_authenticated
            and user_permission
            and request.user.has_perm(user_permission)
        )
