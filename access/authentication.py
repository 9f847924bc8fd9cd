import base64
import binascii

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


class WriteKeyAuthentication(authentication.BaseAuthentication):
    """The Segment Spec's write key: an API token (pt_…) sent as the HTTP Basic user name with an
    empty password, as the Segment and RudderStack SDKs send it, or as `writeKey` in the JSON body
    (the Spec allows both). Any token with `events:write` is a write key: the operator creates one
    in the admin (API tokens) and pastes it into the SDK's configuration."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if header and header[0].lower() == b"basic":
            if len(header) != 2:
                raise exceptions.AuthenticationFailed(_("Authorization header must be 'Basic <write key>:'."))
            try:
                raw = base64.b64decode(header[1], validate=True).decode("utf-8").partition(":")[0]
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise exceptions.AuthenticationFailed(_("Basic credentials are not valid base64.")) from exc
        elif not header:
            body = request.data
            raw = body.get("writeKey") if isinstance(body, dict) else None
            if not isinstance(raw, str) or not raw:
                return None
        else:
            return None
        token = api_token_authenticate(raw=raw)
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid, expired or revoked write key."))
        return ApiClient(token), token

    def authenticate_header(self, request) -> str:
        return 'Basic realm="portrait"'
