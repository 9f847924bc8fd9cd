"""Property-based fuzzing of the REST API from its own OpenAPI schema (schemathesis): whatever a
client sends, the answer is a 4xx with a reason or a success, never a server error; every answer
conforms to the schema (status code, content type, body); the same request without a token is
refused."""

import os

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    not_a_server_error,
    response_schema_conformance,
)

from django.core.wsgi import get_wsgi_application

from access.models import Scope
from access.services import api_token_create

# CI runs a fixed sample (reproducible); FUZZ_EXAMPLES=1000 FUZZ_RANDOM=1 explores further.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
FUZZ_DERANDOMIZE = not os.environ.get("FUZZ_RANDOM")

# Django's WSGI handler, not config.wsgi: importing that one installs the web statement timeout in
# this process, for every later test's queries too.
application = get_wsgi_application()
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


@pytest.fixture
def token(db) -> str:
    # Requests run in this test's transaction, so they must not close the connection at their end
    # (Django's own test client disconnects the same handler).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield api_token_create(name="fuzz", scopes=[s.value for s in Scope])[1]
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=FUZZ_DERANDOMIZE, suppress_health_check=list(HealthCheck))
def test_api_answers_every_generated_request_without_a_server_error(case, token):
    case.call_and_validate(
        headers={"Authorization": f"Bearer {token}"},
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance, ignored_auth],
    )
