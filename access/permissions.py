from rest_framework.permissions import BasePermission

from access.authentication import ApiClient


class HasRequiredScopes(BasePermission):
    """Authenticated client whose token holds every scope in `view.required_scopes`: a tuple, or a
    dict from HTTP method to tuple (HEAD and OPTIONS as GET)."""

    message = "This token lacks a required scope."

    def has_permission(self, request, view) -> bool:
        client = request.user
        if not isinstance(client, ApiClient):
            return False
        required = getattr(view, "required_scopes", ())
        if isinstance(required, dict):
            method = "GET" if request.method in ("HEAD", "OPTIONS") else request.method
            required = required.get(method, ())  # any other method is answered 405 by the view
        return set(required) <= client.scopes
