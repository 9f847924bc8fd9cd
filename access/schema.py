"""OpenAPI description of the token authentication (loaded by AccessConfig.ready)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "access.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A client token from the admin (API tokens), sent as 'Authorization: Bearer pt_…'.",
        }


class WriteKeyScheme(OpenApiAuthenticationExtension):
    target_class = "access.authentication.WriteKeyAuthentication"
    name = "writeKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "basic",
            "description": "The Segment Spec's write key: an API token with events:write as the user name, "
                           "empty password (or `writeKey` in the body).",
        }
