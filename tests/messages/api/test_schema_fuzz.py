"""Schemathesis over the whole API, from the app's own schema: every operation, with a token,
valid and invalid inputs; no 5xx, every answer documented and matching its schema.

IMAP connection tests are answered without a network (the fuzzer invents host names); the
changes feed's long poll is capped at a fraction of a second so the fuzzing stays quick.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from emailplatform.wsgi import application
from messages import selectors
from messages.models import Attachment, Message, OutboundMessage, Thread
from tests.mailfactory import make_mail

from .conftest import ingest, new_token  # noqa: F401 (fixtures: api, mailbox)

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
    return st.one_of(
        st.just(path_parameters),
        st.sampled_from(known).map(lambda i: {**path_parameters, "id": i}),
    )


# Strings that once crashed the API (500s) and their kin: runs of search operators (33 "-" in a
# row overflowed websearch_to_tsquery's stack), dates with UTC offsets PostgreSQL cannot store
# (beyond +-15:59) in filters and in page cursors. Mixed into generated queries half the time.
SEARCH_OPERATORS = st.text(alphabet="-!|&():*<>\"' or", min_size=1, max_size=200)
DASH_RUNS = st.integers(1, 400).map(lambda n: "-" * n)
UTC_OFFSETS = st.builds(
    lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
    st.sampled_from("+-"),
    st.integers(0, 23),
    st.integers(0, 59),
)
DATES = st.builds(
    lambda day, offset: day.isoformat() + offset,
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    UTC_OFFSETS,
)


def _cursor(values: list, reverse: bool) -> str:
    token = json.dumps({"p": values, "r": reverse}).encode()
    return base64.urlsafe_b64encode(token).decode().rstrip("=")


CURSORS = st.builds(
    _cursor, st.lists(st.one_of(DATES, st.integers(), st.floats()), max_size=3), st.booleans()
)
HOSTILE_QUERY = st.fixed_dictionaries(
    {},
    optional={
        "q": st.one_of(SEARCH_OPERATORS, DASH_RUNS),
        "after": DATES,
        "before": DATES,
        "cursor": CURSORS,
    },
)


@schema.hook
def flatmap_query(context, query):
    if context.operation.method.upper() != "GET" or context.operation.path not in (
        "/api/messages/",
        "/api/threads/",
        "/api/folders/",
    ):
        return st.just(query)
    return st.one_of(st.just(query), HOSTILE_QUERY.map(lambda extra: {**(query or {}), **extra}))


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
    draft = OutboundMessage.objects.create(
        account=mailbox.account,
        message_id_header="<fuzz-draft@example.com>",
        envelope_id="fuzz-draft",
        from_address=mailbox.account.email_address,
        to=[{"name": "Bob", "address": "bob@example.org"}],
        subject="Fuzzing draft",
    )
    KNOWN_IDS.clear()
    KNOWN_IDS.update(
        outbound=[draft.pk],
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


# Bodies nested deeper than Python's recursion limit (a RecursionError, once a 500 even for an
# anonymous client on the token endpoint): a JSON encoder cannot produce them, so they are
# written as text and sent to every operation that takes a body.
BODY_OPERATIONS = [
    (operation.method.upper(), operation.path)
    for result in schema.get_all_operations()
    for operation in [result.ok()]
    if operation.method.upper() in ("POST", "PATCH", "PUT")
]


@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
@given(
    depth=st.integers(1, 5000),
    brackets=st.sampled_from([("[", "]"), ('{"a":', "}")]),
    token=st.booleans(),
)
@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_deep_bodies_are_never_a_server_error(
    client, api, mailbox, method, path, depth, brackets, token
):
    opener, closer = brackets
    body = opener * depth + "0" + closer * depth
    url = path.replace("{id}", str(mailbox.account.pk))
    sender = api if token else client
    response = sender.generic(method, url, body, content_type="application/json")
    assert response.status_code < 500, (method, url, depth, response.content[:200])
