"""Schemathesis's state machine over the API: sequences of calls that follow OpenAPI links
(a login's token used for the next call, an account listed then read, patched, synced,
connection-tested; a message listed then read, its raw source and attachments downloaded),
with the hostile strings of test_schema_fuzz.py mixed into the list queries. No 5xx, every
answer documented and matching its schema.

The app's schema has no links (drf-spectacular writes none): they are added here, to this
test's copy of the schema only. The run is bounded and derandomized.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime

import pytest
import schemathesis
from django.db import transaction
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RULE_MARKER
from schemathesis.specs.openapi.checks import use_after_free

from emailplatform.wsgi import application
from messages.api.parsers import MAX_JSON_DEPTH

from .test_schema_fuzz import (  # noqa: F401 (fixtures: fuzz_token, in_test_transaction)
    HOSTILE_QUERY,
    KNOWN_IDS,
    NOT_APPLICABLE,
    flatmap_path_parameters,
    fuzz_token,
    in_test_transaction,
)

pytestmark = pytest.mark.django_db


def _link(operation_id: str, **parameters: str) -> dict:
    return {"operationId": operation_id, "parameters": parameters}


ACCOUNT_ID = {"id": "$response.body#/id"}
FIRST_ID = {"id": "$response.body#/results/0/id"}
ACCOUNT_OPERATIONS = [
    "accounts_retrieve",
    "accounts_partial_update",
    "accounts_sync_create",
    "accounts_test_connection_create",
    "accounts_folders_list",
    "accounts_destroy",
]

# (operation, status) -> {link name: link}
LINKS: dict[tuple[str, str], dict[str, dict]] = {
    ("auth_token_create", "200"): {
        # The token just issued, used for the next call (instead of the test's own).
        f"Token{target}": _link(target, **{"header.Authorization": "Token {$response.body#/token}"})
        for target in ("accounts_list", "messages_list", "threads_list", "changes_retrieve")
    },
    ("accounts_create", "201"): {
        f"Created{op}": _link(op, **ACCOUNT_ID) for op in ACCOUNT_OPERATIONS
    },
    ("accounts_list", "200"): {f"Listed{op}": _link(op, **FIRST_ID) for op in ACCOUNT_OPERATIONS},
    ("accounts_partial_update", "200"): {
        f"Patched{op}": _link(op, **ACCOUNT_ID)
        for op in ("accounts_retrieve", "accounts_sync_create", "accounts_test_connection_create")
    },
    ("accounts_folders_list", "200"): {
        "FolderMessages": _link(
            "messages_list", **{"query.folder": "$response.body#/results/0/name"}
        ),
    },
    ("messages_list", "200"): {
        f"Listed{op}": _link(op, **FIRST_ID)
        for op in ("messages_retrieve", "messages_partial_update", "messages_raw_retrieve")
    },
    ("messages_retrieve", "200"): {
        "Attachment": _link("attachments_download_retrieve", id="$response.body#/attachments/0/id"),
        "Raw": _link("messages_raw_retrieve", **ACCOUNT_ID),
        "Thread": _link("threads_retrieve", id="$response.body#/thread"),
        "Patch": _link("messages_partial_update", **ACCOUNT_ID),
    },
    ("threads_list", "200"): {
        "ListedThread": _link("threads_retrieve", **FIRST_ID),
        "ThreadMessages": _link(
            "messages_list", **{"query.thread": "$response.body#/results/0/id"}
        ),
    },
}


def with_links(document: dict) -> dict:
    document = copy.deepcopy(document)
    responses = {
        operation["operationId"]: operation["responses"]
        for item in document["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
    for (operation_id, status), links in LINKS.items():
        responses[operation_id][status].setdefault("links", {}).update(links)
    return document


def load_stateful_schema() -> schemathesis.BaseSchema:
    document = SchemaGenerator().get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(
        with_links(json.loads(OpenApiJsonRenderer().render(document)))
    )
    loaded.app = application
    # The per-operation run's real ids for path parameters (its hostile query strings are
    # mixed in more often here: see flatmap_query below).
    loaded.hook(flatmap_path_parameters)
    return loaded


schema = load_stateful_schema()


# Long runs of "-" (33 or more overflowed websearch_to_tsquery's stack).
LONG_DASH_RUNS = st.integers(33, 400).map(lambda n: "-" * n)


# Dates whose UTC offset PostgreSQL cannot store (beyond +-15:59).
FAR_DATES = st.builds(
    lambda day, sign, h, m: f"{day.isoformat()}{sign}{h:02d}:{m:02d}",
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from("+-"),
    st.integers(16, 23),
    st.integers(0, 59),
)


# A workflow lists a few times only: the hostile strings go into most of its list queries.
@schema.hook
def flatmap_query(context, query):
    if context.operation.method.upper() != "GET" or context.operation.path not in (
        "/api/messages/",
        "/api/threads/",
        "/api/folders/",
    ):
        return st.just(query)
    hostile = HOSTILE_QUERY.map(lambda extra: {**(query or {}), **extra})
    dashes = LONG_DASH_RUNS.map(lambda q: {**(query or {}), "q": q})
    far = st.tuples(st.sampled_from(["after", "before"]), FAR_DATES).map(
        lambda item: {**(query or {}), item[0]: item[1]}
    )
    return st.one_of(hostile, dashes, far, st.just(query))


# The login is a root of the workflows: half the time with the fixture user's credentials,
# so a token is issued and the links that use it are followed.
CREDENTIALS = {"username": "alice", "password": "pw-alice-123"}


# Host names that once crashed account creation (500s): an empty label ("a..b") or one
# longer than 63 characters, which Python's IDNA codec refuses with a UnicodeError.
LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-\u00e9\u00df", max_size=80)
HOSTILE_HOSTS = st.one_of(
    st.lists(st.one_of(LABEL, st.just("")), min_size=1, max_size=5).map(".".join),
    st.integers(64, 300).map(lambda n: "a" * n + ".example"),
)
HOST_OPERATIONS = ("/api/accounts/", "/api/accounts/{id}/")


# Bodies nested deeper than Python's recursion limit (a RecursionError, once a 500 even for
# an anonymous login): a JSON encoder cannot write them, so they are sent as bytes.
DEEP_BODIES = st.builds(
    lambda depth, brackets: (brackets[0] * depth + "0" + brackets[1] * depth).encode(),
    # Deeper than the parser's limit: shallower objects with unknown keys are valid PATCHes.
    st.integers(MAX_JSON_DEPTH + 1, 5000),
    st.sampled_from([("[", "]"), ('{"a":', "}")]),
)


@schema.hook
def flatmap_case(context, case):
    # Only valid cases are rewritten: a negative case's checks judge the body it was made with.
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return st.just(case)
    path = context.operation.path
    variants = [st.just(case)]
    if context.operation.method.upper() in ("POST", "PATCH"):
        variants.append(DEEP_BODIES.map(lambda body: _with_body(body)(case)))
    if path == "/api/auth/token/":
        # Logins with the fixture user's password, so a token is issued and its links followed.
        variants.append(st.just(case).map(_with_body(dict(CREDENTIALS))))
    if path == "/api/accounts/" and context.operation.method.upper() == "POST":
        # An IMAP account the schema's generator rarely completes, with a hostile host.
        variants.append(HOSTILE_HOSTS.map(lambda host: _with_body(imap_account(host))(case)))
    server = case.body.get("settings") if isinstance(case.body, dict) else None
    if path in HOST_OPERATIONS and isinstance(server, dict) and "imap_host" in server:
        variants.append(
            HOSTILE_HOSTS.map(
                lambda host: _with_body({**case.body, "settings": {**server, "imap_host": host}})(
                    case
                )
            )
        )
    return st.one_of(variants)


def imap_account(host: str) -> dict:
    return {
        "provider": "imap",
        "email_address": "fuzz@example.com",
        "password": "pw-fuzz",
        "settings": {"imap_host": host},
    }


def _with_body(body):
    def replace(case):
        case.body = body
        return case

    return replace


# And use_after_free: deleting an account is queued (202, AccountDeletion), the account stays
# readable until the worker has removed it.
STATEFUL_NOT_APPLICABLE = [*NOT_APPLICABLE, use_after_free]


def test_the_schema_has_links_for_the_workflows():
    workflow = schema.as_state_machine()
    rules = " ".join(
        name for name in dir(workflow) if hasattr(getattr(workflow, name), RULE_MARKER)
    )
    for link in ("Tokenaccounts_list", "Createdaccounts_test_connection_create", "Attachment"):
        assert link in rules, (link, rules)


def test_workflows_conform_to_the_schema(fuzz_token):  # noqa: F811 (the imported fixture)
    class Workflow(schema.as_state_machine()):
        @staticmethod
        def _headers(case):
            # A token from a login earlier in the workflow (a link), else the test's own.
            linked = (case.headers or {}).get("Authorization", "")
            token = linked if linked.startswith("Token ") and " " not in linked[6:] else None
            return {"Authorization": token or f"Token {fuzz_token}"}

        # Every workflow starts from the fixture's data: what one creates or deletes is rolled
        # back (Hypothesis replays a workflow expecting the same answers).
        def setup(self):
            self._savepoint = transaction.savepoint()

        def teardown(self):
            transaction.savepoint_rollback(self._savepoint)

        def get_call_kwargs(self, case):
            return {"headers": self._headers(case)}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(
                response,
                headers=self._headers(case),
                excluded_checks=STATEFUL_NOT_APPLICABLE,
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    assert KNOWN_IDS["messages"]
    Workflow.run(
        settings=settings(
            max_examples=45,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
            # No shrinking: a replayed workflow meets a database its first run changed.
            phases=[Phase.explicit, Phase.generate],
        )
    )
