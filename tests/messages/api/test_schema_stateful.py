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

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RULE_MARKER

from emailplatform.wsgi import application

from .test_schema_fuzz import (  # noqa: F401 (fixtures: fuzz_token, in_test_transaction)
    KNOWN_IDS,
    NOT_APPLICABLE,
    flatmap_path_parameters,
    flatmap_query,
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
    # The same hooks as the per-operation run: real ids for path parameters, hostile strings
    # (search operator runs, out-of-range UTC offsets, forged cursors) in list queries.
    loaded.hook(flatmap_path_parameters)
    loaded.hook(flatmap_query)
    return loaded


schema = load_stateful_schema()

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


@schema.hook
def flatmap_case(context, case):
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    path = context.operation.path
    if path == "/api/auth/token/" and positive:
        # Half the logins are the fixture user's, so a token is issued and its links followed.
        return st.one_of(st.just(case), st.just(case).map(_with_body(dict(CREDENTIALS))))
    server = case.body.get("settings") if isinstance(case.body, dict) else None
    if path in HOST_OPERATIONS and isinstance(server, dict) and "imap_host" in server:
        return st.one_of(
            st.just(case),
            HOSTILE_HOSTS.map(
                lambda host: _with_body({**case.body, "settings": {**server, "imap_host": host}})(
                    case
                )
            ),
        )
    return st.just(case)


def _with_body(body):
    def replace(case):
        case.body = body
        return case

    return replace


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

        def get_call_kwargs(self, case):
            return {"headers": self._headers(case)}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(
                response,
                headers=self._headers(case),
                excluded_checks=NOT_APPLICABLE,
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    assert KNOWN_IDS["messages"]
    Workflow.run(
        settings=settings(
            max_examples=30,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
    )
