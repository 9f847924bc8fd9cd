from rest_framework.permissions import BasePermission

from access.authentication import ApiClient


class HasRequiredScopes(BasePermission):
    """Authenticated client whose token holds every scope in `view.required_scopes`: a tuple, or a
    dict from HTTP method to tuple (HEAD and OPTIONS as GET).

    Fails closed: a view without `required_scopes`, or a method the view serves that its dict does not
    name, is refused to every token. `required_scopes = ()` opens a view to any valid token, on purpose.
    """

    message = "This token lacks a required scope."

    def has_permission(self, request, view) -> bool:
        client = request.user
        if not isinstance(client, ApiClient):
            return False
        required = getattr(view, "required_scopes", None)
        if required is None:
            return False
        if isinstance(required, dict):
            method = "GET" if request.method in ("HEAD", "OPTIONS") else request.method
            if method not in required:
                # a method the view does not serve is left to the view's 405
                return not hasattr(view, method.lower())
            required = required[method]
        return set(required) <= client.scopes
