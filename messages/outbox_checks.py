"""What the outbox refuses before anything is stored or queued: header injection, addresses
that are not one plain address, and people whose name shows another address.

Every header value a client gives (subject, names, addresses, file names) is checked for the
characters that end a header line: CR and LF (the classic injection), NUL, and the other
characters Python's str.splitlines() breaks on, since the email package folds and parses with
it.
"""

from __future__ import annotations

import re

# CR, LF, NUL and every other line boundary of str.splitlines().
LINE_BREAKING = frozenset("\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_LINE_BREAK = re.compile("[" + re.escape("".join(sorted(LINE_BREAKING))) + "]")
# In an address: no control character, space, or the characters that add a display name,
# a comment, a second address or a route.
_ADDRESS_FORBIDDEN = re.compile(r'[\x00-\x20\x7f<>(),;:"\[\]\\]')
_DOMAIN_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_ADDRESS_LIKE = re.compile(r"[^\s<>\"'@]+@[^\s<>\"'@]+\.[^\s<>\"'@]+")
MAX_ADDRESS_CHARS = 254


class HeaderValueError(ValueError):
    """A value that cannot go into a header as given; the message says why."""


def header_safe(value: str, what: str) -> str:
    """VALUE unchanged, or HeaderValueError when it could end a header line."""
    if _LINE_BREAK.search(value):
        raise HeaderValueError(f"The {what} contains a line break or NUL: not allowed in mail.")
    return value


def one_line(value: str) -> str:
    """VALUE with its line breaks made spaces: for text the platform did not get from the
    client (a received subject, the account's name) that goes into a header."""
    return "".join(" " if ch in LINE_BREAKING else ch for ch in value or "")


def address_normalized(value: str) -> str:
    """One plain address (local@domain, ASCII local part), its domain in ASCII (IDNA);
    HeaderValueError otherwise, e.g. for `Bob <bob@x>`, `a@x, b@y` or `a@x\\r\\nBcc: c@y`.

    What passes is a dot-atom on both sides of the @ (RFC 5322), which the email package
    writes back unchanged: no parse of it is needed (tests/outbox/test_addresses.py)."""
    header_safe(value, "address")
    if not value or len(value) > MAX_ADDRESS_CHARS:
        raise HeaderValueError("An address must be 1 to 254 characters long.")
    if _ADDRESS_FORBIDDEN.search(value):
        raise HeaderValueError(
            f"{value!r} is not one plain address (local@domain): no name, spaces, comments "
            "or several addresses here; give the name in `name`."
        )
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or "@" in local:
        raise HeaderValueError(f"{value!r} is not an address of the form local@domain.")
    if not local.isascii():
        raise HeaderValueError(f"{value!r}: a non-ASCII local part needs SMTPUTF8, not supported.")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise HeaderValueError(f"{value!r}: the part before @ has misplaced dots.")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise HeaderValueError(f"{value!r}: the domain is not a valid host name.") from None
    labels = ascii_domain.split(".")
    if not all(_DOMAIN_LABEL.match(label) for label in labels):
        raise HeaderValueError(f"{value!r}: the domain is not a valid host name.")
    return f"{local}@{ascii_domain}"


def display_name_checked(name: str, address: str) -> str:
    """NAME unchanged, or HeaderValueError when it could break the header or shows an address
    other than ADDRESS (`"ceo@bank.example" <eve@evil.example>`)."""
    header_safe(name, "name")
    if len(name) > 256:
        raise HeaderValueError("A name must be at most 256 characters long.")
    for shown in _ADDRESS_LIKE.findall(name):
        if shown.strip(".").lower() != address.lower():
            raise HeaderValueError(
                f"The name {name!r} shows another address than {address!r}: not allowed."
            )
    return name
