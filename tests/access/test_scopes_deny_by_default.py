"""The scope check fails closed: a view or a method without required scopes is refused, not open."""

import pytest
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from access.authentication import ApiClient
from access.models import ApiToken, Scope
from access.permissions import HasRequiredScopes

EVERY_SCOPE = list(Scope.values)


class NoScopesDeclared(APIView):
    permission_classes = [HasRequiredScopes]

    def get(self, request):
        return Response({"ok": True})


class ScopesForGetOnly(APIView):
    permission_classes = [HasRequiredScopes]
    required_scopes = {"GET": (Scope.PROFILES_READ,)}

    def get(self, request):
        return Response({"ok": True})

    def post(self, request):
        return Response({"ok": True})


class ExplicitlyOpenToAnyToken(APIView):
    permission_classes = [HasRequiredScopes]
    required_scopes = ()

    def get(self, request):
        return Response({"ok": True})


def _call(view, method: str, scopes: list[str]):
    request = getattr(APIRequestFactory(), method)("/")
    client = ApiClient(ApiToken(name="t", prefix="p", scopes=scopes))
    force_authenticate(request, user=client, token=client.token)
    return view.as_view()(request)


def test_a_view_that_declares_no_scopes_is_refused_even_to_a_token_with_every_scope():
    assert _call(NoScopesDeclared, "get", EVERY_SCOPE).status_code == 403


def test_a_method_missing_from_the_scope_table_is_refused_even_to_a_token_with_every_scope():
    assert _call(ScopesForGetOnly, "get", ["profiles:read"]).status_code == 200
    assert _call(ScopesForGetOnly, "post", EVERY_SCOPE).status_code == 403


def test_a_method_the_view_does_not_implement_is_still_answered_405():
    assert _call(ScopesForGetOnly, "delete", EVERY_SCOPE).status_code == 405


def test_head_and_options_need_the_scopes_of_get():
    assert _call(ScopesForGetOnly, "head", ["profiles:read"]).status_code == 200
    assert _call(ScopesForGetOnly, "options", ["events:write"]).status_code == 403


def test_an_empty_scope_tuple_opens_the_view_to_any_token_on_purpose():
    assert _call(ExplicitlyOpenToAnyToken, "get", []).status_code == 200


@pytest.mark.parametrize("view", ["crm", "ingestion", "privacy", "profiles", "segments"])
def test_every_api_view_declares_scopes_for_each_method_it_serves(view):
    import importlib

    module_names = {"crm": ["crm.apis"], "ingestion": ["ingestion.apis"], "privacy": ["privacy.apis"],
                    "profiles": ["profiles.apis", "profiles.identity_apis"], "segments": ["segments.apis"]}[view]
    for module_name in module_names:
        module = importlib.import_module(module_name)
        for cls in vars(module).values():
            if not (isinstance(cls, type) and issubclass(cls, APIView) and cls.__module__ == module_name):
                continue
            served = [m.upper() for m in cls.http_method_names if m not in ("head", "options") and hasattr(cls, m)]
            if not served:
                continue
            required = getattr(cls, "required_scopes", None)
            assert required is not None, f"{cls.__name__} declares no required_scopes"
            if isinstance(required, dict):
                assert set(served) <= set(required), f"{cls.__name__} serves {served} but scopes {sorted(required)}"
