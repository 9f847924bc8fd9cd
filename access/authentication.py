from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

from access.services import api_token_authenticate


class ApiClient:
    """The caller of an API request: a client app holding a token, never a Django user."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, token):
        self.token = token
        self.scopes = frozenset(token.scopes)

    def __str__(self) -> str:
        return self.token.name


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0] not in (self.keyword, "Token"):
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(_("Authorization header must be 'Bearer <token>'."))
        token = api_token_authenticate(raw=header[1])
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid, expired or revoked token."))
        return ApiClient(token), token

    def authenticate_header(self, request) -> str:
        return self.keyword
