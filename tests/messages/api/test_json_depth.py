"""The depth check that runs before every JSON body is parsed: it must count the nesting of
the document, not brackets, quotes or backslashes inside its strings."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from messages.api.parsers import json_depth

_TRICKY_TEXT = st.text(alphabet=st.sampled_from('[]{}"\\ax\n\u00e9'), max_size=12)
_JSON = st.recursive(
    st.none() | st.integers() | _TRICKY_TEXT,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(_TRICKY_TEXT, children, max_size=3)
    ),
    max_leaves=60,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_depth_is_the_nesting_of_the_document(value: object) -> None:
    # Padded past the count below which json_depth answers 0 without looking.
    padded = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[value]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
    assert json_depth(json.dumps(padded).encode()) == _depth(padded)


def test_brackets_inside_strings_are_not_nesting() -> None:
    body = json.dumps({"subject": "[" * 100 + '\\"{' * 50, "to": []}).encode()
    assert json_depth(body) == 2
