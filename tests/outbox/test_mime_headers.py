"""The outbound header block is written without building an EmailMessage (messages.outbox_mime
._head); whatever the input, its bytes are those EmailMessage writes for the same headers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from messages.outbox_mime import POLICY, MimeInput, Person, _head, _headers, mime_build

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=90)
_ascii = st.from_regex(r"[ -~]{0,100}", fullmatch=True)
_names = st.one_of(
    st.just(""), _text, st.from_regex(r"[A-Za-z0-9 '.,\"()=?@<>-]{0,40}", fullmatch=True)
)
_addresses = st.from_regex(
    r"[A-Za-z0-9_+'=-]{1,12}(\.[A-Za-z0-9_+'=-]{1,8}){0,2}@[a-z0-9-]{1,20}(\.[a-z0-9-]{1,12}){0,2}",
    fullmatch=True,
)
_people = st.builds(Person, name=_names, address=_addresses)
_ids = st.from_regex(r"<[a-z0-9.$-]{1,40}@[a-z0-9.-]{1,30}>", fullmatch=True)
_dates = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(min_value=-12 * 60, max_value=14 * 60),
)


@settings(max_examples=400, deadline=None)
@given(
    sender=_people,
    to=st.lists(_people, max_size=4),
    cc=st.lists(_people, max_size=3),
    subject=st.one_of(_ascii, _text),
    message_id=_ids,
    date=_dates,
    in_reply_to=st.one_of(st.just(""), _ids),
    references=st.lists(_ids, max_size=6),
)
@example(
    sender=Person("Bench Sender", "bench@example.com"),
    to=[Person("Recipient 1", "rcpt1@example.org")],
    cc=[],
    subject="Quarterly figures, part 1",
    message_id="<1.2@example.com>",
    date=datetime(2026, 12, 1, 18, 0, tzinfo=UTC),
    in_reply_to="",
    references=[],
)
def test_the_header_block_is_what_email_writes(
    sender, to, cc, subject, message_id, date, in_reply_to, references
):
    mail = MimeInput(
        sender=sender,
        to=to,
        cc=cc,
        subject=subject,
        text="Hello",
        html="",
        message_id=message_id,
        date=date,
        in_reply_to=in_reply_to,
        references=references,
    )
    expected = _headers(mail).as_bytes(policy=POLICY)
    assert _head(mail) + b"\r\n" == expected
    assert mime_build(mail).startswith(expected[:-2] + b"Content-Type: text/plain")


def test_a_line_break_in_a_header_is_refused_as_email_refuses_it():
    mail = MimeInput(
        sender=Person("A", "a@example.com"),
        to=[Person("", "b@example.org")],
        cc=[],
        subject="Hello\r\nBcc: victim@example.org",
        text="x",
        html="",
        message_id="<1@example.com>",
        date=datetime(2026, 12, 1, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="linefeed"):
        mime_build(mail)
