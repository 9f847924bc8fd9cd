from rest_framework.permissions import BasePermission

from access.authentication import ApiClient


class HasRequiredScopes(BasePermission):
    """Authenticated client whose token holds every scope in `view.required_scopes`."""

    message = "This token lacks a required scope."

    def has_permission(self, request, view) -> bool:
        client = request.user
        if not isinstance(client, ApiClient):
            return False
        return set(getattr(view, "required_scopes", ())) <= client.scopes
