"""The local Gmail API takes any mail, as Gmail does: every corpus message (malformed ones
included) is stored, threaded and served in every format without an error."""

from __future__ import annotations

import pytest

from gmail_sync.client import decode_raw
from tests.conftest import corpus_files
from tests.gmail_fake import render
from tests.gmail_fake.server import GmailFake


@pytest.mark.parametrize("fmt", ["minimal", "metadata", "raw", "full"])
def test_every_corpus_message_is_served(fmt):
    fake = GmailFake(https=False)
    try:
        box, _ = fake.add_user("corpus@gmail.com")
        files = corpus_files()
        for path in files:
            message = box.add_message(path.read_bytes(), ["INBOX"])
            answer = render.render(message, fmt)
            assert answer["id"] == message.id
            if fmt == "raw":
                assert decode_raw(answer["raw"]) == path.read_bytes()
        assert len(box.messages) == len(files) > 100
    finally:
        fake.close()
