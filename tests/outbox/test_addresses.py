"""The address check every recipient and sender goes through (messages.outbox_checks
.address_normalized): what it accepts, the email package writes back unchanged, so the address
a client gave is the one the server is asked to deliver to."""

from __future__ import annotations

from email.headerregistry import Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messages.outbox_checks import HeaderValueError, address_normalized

_local_parts = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=16)


@settings(max_examples=600, deadline=None)
@given(
    local=_local_parts,
    domain=st.one_of(
        st.sampled_from(["example.org", "Bücher.example", "example.org.", "x..y", "-x.y"]),
        st.text(alphabet="ab0-.ü", max_size=12),
    ),
)
def test_an_accepted_address_is_written_back_unchanged(local: str, domain: str) -> None:
    try:
        address = address_normalized(f"{local}@{domain}")
    except HeaderValueError:
        return
    assert Address(addr_spec=address).addr_spec == address
    assert address.rpartition("@")[0] == local


@pytest.mark.parametrize(
    "value",
    [
        "a..b@example.org",
        ".a@example.org",
        "a.@example.org",
        "a b@example.org",
        "a@b@example.org",
        "a@example.org.",
        "a@example..org",
    ],
)
def test_misplaced_dots_spaces_and_second_ats_are_refused(value: str) -> None:
    with pytest.raises(HeaderValueError):
        address_normalized(value)


def test_the_domain_is_written_in_ascii() -> None:
    assert address_normalized("o'brien+tag@Bücher.example") == "o'brien+tag@xn--bcher-kva.example"
