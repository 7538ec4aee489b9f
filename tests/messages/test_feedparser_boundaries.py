"""The feedparser's boundaries without a regular expression each (messages.feedparser_boundaries)
split every message exactly as the standard library's own do."""

from __future__ import annotations

import email
import email.feedparser
import re
from email.message import Message
from email.policy import compat32

import pytest

from messages import mime  # noqa: F401  (installs the matcher)
from messages.feedparser_boundaries import BoundaryMatcher
from tests.conftest import corpus_files


def feedparser_pattern(separator: str) -> str:
    """What email.feedparser compiles for a multipart whose boundary is SEPARATOR[2:]."""
    return (
        "(?P<sep>" + re.escape(separator) + r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
    )


def tree(msg: Message) -> list:
    """Everything the parser decided: each part's headers, preamble, epilogue, payload, defects."""
    out = []
    for part in msg.walk():
        payload = part.get_payload()
        out.append(
            (
                part.items(),
                part.preamble,
                part.epilogue,
                payload if isinstance(payload, str) else len(payload),
                [type(defect).__name__ for defect in part.defects],
            )
        )
    return out


def test_the_matcher_is_installed():
    parsed = email.message_from_bytes(
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
        policy=compat32,
    )
    assert parsed.get_payload(0).get_payload() == "x"
    assert isinstance(email.feedparser.re.compile(feedparser_pattern("--b")), BoundaryMatcher)


def test_every_corpus_message_is_split_as_the_standard_parser_splits_it(monkeypatch):
    raws = [path.read_bytes() for path in corpus_files()]
    ours = [tree(email.message_from_bytes(raw, policy=compat32)) for raw in raws]
    monkeypatch.setattr(email.feedparser, "re", re)
    theirs = [tree(email.message_from_bytes(raw, policy=compat32)) for raw in raws]
    assert ours == theirs
    assert sum(1 for t in theirs if len(t) > 1) > 20  # multiparts were compared


@pytest.mark.parametrize("boundary", ["b", "=_Part_1.2+x", "a(b)*?[c]{2}|$^\\", "é ü"])
@pytest.mark.parametrize(
    "line",
    [
        "--{b}\r\n",
        "--{b}--\r\n",
        "--{b}--",
        "--{b}",
        "--{b}  \t\n",
        "--{b}--  \r",
        "--{b}x\r\n",
        "--{b}- \r\n",
        " --{b}\r\n",
        "--{b}\r\n\r\n",
        "--{b}---\n",
        "-{b}\n",
        "",
    ],
)
def test_a_boundary_line_matches_as_with_the_regular_expression(boundary, line):
    separator = "--" + boundary
    line = line.format(b=boundary)
    expected = re.compile(feedparser_pattern(separator)).match(line)
    got = email.feedparser.re.compile(feedparser_pattern(separator)).match(line)
    assert (got is None) == (expected is None)
    if expected is not None:
        assert [got.group(g) for g in ("end", "ws", "linesep")] == [
            expected.group(g) for g in ("end", "ws", "linesep")
        ]
