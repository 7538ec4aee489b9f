"""Schemathesis over the whole API, from the app's own schema: every operation, with a token,
valid and invalid inputs; no 5xx, every answer documented and matching its schema.

IMAP connection tests are answered without a network (the fuzzer invents host names); the
changes feed's long poll is capped at a fraction of a second so the fuzzing stays quick.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from emailplatform.wsgi import application
from messages import selectors
from messages.models import Attachment, Message, Thread
from tests.mailfactory import make_mail

from .conftest import ingest, new_token

pytestmark = pytest.mark.django_db


def load_schema() -> schemathesis.BaseSchema:
    """The schema /api/schema/ serves, bound to the Django WSGI app (no server, no network)."""
    document = SchemaGenerator().get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(json.loads(OpenApiJsonRenderer().render(document)))
    loaded.app = application
    return loaded


schema = load_schema()

# Path parameters are drawn from these real ids half of the time (else from the schema), so
# detail operations reach real objects, not only 404s.
KNOWN_IDS: dict[str, list[int]] = {}


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    collection = context.operation.path.split("/")[2]
    known = KNOWN_IDS.get(collection) or []
    if not path_parameters or "id" not in path_parameters or not known:
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters), st.sampled_from(known).map(lambda i: {"id": i}))


@pytest.fixture
def in_test_transaction():
    """Requests run inside the test's transaction: unlike Django's test client, the real WSGI
    handler closes the connection when a request ends (as if after a web request)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_token(mailbox, user, settings, monkeypatch, in_test_transaction) -> str:
    settings.ALLOWED_HOSTS = ["localhost"]
    monkeypatch.setattr("smtp_sync.accounts.imap_connection_test", lambda server: ["IMAP4REV1"])
    monkeypatch.setattr(selectors, "CHANGES_MAX_WAIT_SECONDS", 0.2)
    ingest(
        mailbox.account,
        make_mail(
            "Fuzzing",
            html='<p>hi <img src="https://remote.example/x.png"><script>alert(1)</script></p>',
            attachments=[("n.txt", "text/plain", b"notes")],
            minutes=90,
        ),
        include_attachments=False,
    )
    KNOWN_IDS.clear()
    KNOWN_IDS.update(
        accounts=[mailbox.account.pk],
        threads=list(Thread.objects.values_list("id", flat=True)),
        messages=list(Message.objects.values_list("id", flat=True)),
        attachments=list(Attachment.objects.values_list("id", flat=True)),
    )
    return new_token(user)


# Every check applies but one: positive_data_acceptance expects any schema-valid request to
# succeed, while this API also validates against stored state that a schema cannot express
# (a folder name must exist, an account must not exist yet, credentials must log in, a page
# cursor must be one the API issued). Those answers are documented 400s with error.fields.
NOT_APPLICABLE = [positive_data_acceptance]


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_api_conforms_to_its_schema(case, fuzz_token):
    case.call_and_validate(
        headers={"Authorization": f"Token {fuzz_token}"}, excluded_checks=NOT_APPLICABLE
    )
