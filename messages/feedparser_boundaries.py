"""The standard email parser's multipart boundaries, without a regular expression each.

`email.feedparser` compiles a regular expression for every multipart it meets,
`(?P<sep>--BOUNDARY)(?P<end>--)?(?P<ws>[ \\t]*)(?P<linesep>\\r\\n|\\r|\\n)?$`, and boundaries are
unique per message, so `re`'s cache never helps: compiling it was about a tenth of a message
worker's CPU on a Gmail full sync's mail (half of it multipart). `install` gives the feedparser
a `re` whose `compile` answers that one pattern with `BoundaryMatcher` (the same matches: the
literal separator, then one precompiled tail) and passes every other call to `re`.
"""

from __future__ import annotations

import email.feedparser
import re
from types import SimpleNamespace
from typing import Any

_HEAD = "(?P<sep>"
_TAIL_SOURCE = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_TAIL = re.compile(_TAIL_SOURCE[1:])
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


class BoundaryMatcher:
    """`re.compile(_HEAD + re.escape(separator) + _TAIL_SOURCE)`'s `match`, for the feedparser
    (which reads the groups `end`, `ws` and `linesep` of a match, and nothing else)."""

    __slots__ = ("separator",)

    def __init__(self, separator: str) -> None:
        self.separator = separator

    def match(self, line: str) -> re.Match[str] | None:
        if not line.startswith(self.separator):
            return None
        return _TAIL.match(line, len(self.separator))


def _compile(pattern: Any, flags: int = 0) -> Any:
    if (
        not flags
        and isinstance(pattern, str)
        and pattern.startswith(_HEAD)
        and pattern.endswith(_TAIL_SOURCE)
    ):
        escaped = pattern[len(_HEAD) : -len(_TAIL_SOURCE)]
        separator = _ESCAPED.sub(r"\1", escaped)
        if re.escape(separator) == escaped:  # exactly what the feedparser builds
            return BoundaryMatcher(separator)
    return re.compile(pattern, flags)


def install() -> None:
    """Make `email.feedparser` use BoundaryMatcher (idempotent)."""
    if isinstance(email.feedparser.re, SimpleNamespace):
        return
    public = {name: getattr(re, name) for name in dir(re) if not name.startswith("__")}
    shim = SimpleNamespace(**public)
    shim.compile = _compile
    email.feedparser.re = shim  # type: ignore[assignment]
