"""The whole test corpus (real and malformed mail) through the API: every message shows, every
raw source comes back byte for byte, every attachment downloads, stored or extracted."""

import hashlib

import pytest

from messages.ingest import messages_upsert
from messages.models import Message
from tests.conftest import corpus_files, incoming

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("include_attachments", [True, False])
def test_every_corpus_message_is_served(api, account, include_attachments):
    files = corpus_files()
    raws = {path.name: path.read_bytes() for path in files}
    items = [
        incoming(raw, folder="INBOX", include_attachments=include_attachments)
        for raw in raws.values()
    ]
    messages_upsert(account=account, items=items)
    by_content = {m.raw.sha256: m for m in Message.objects.select_related("raw")}
    downloads = 0
    for raw in raws.values():
        message = by_content[hashlib.sha256(raw).hexdigest()]
        detail = api.get(f"/api/messages/{message.pk}/?raw_headers=true&remote_images=true")
        assert detail.status_code == 200, detail.content
        assert b"".join(api.get(f"/api/messages/{message.pk}/raw/").streaming_content) == raw
        for attachment in detail.json()["attachments"]:
            response = api.get(attachment["download_url"])
            assert response.status_code == 200, (message.subject, attachment)
            body = b"".join(response.streaming_content)
            assert len(body) == attachment["size"]
            downloads += 1
    assert downloads > 50
    assert api.get("/api/threads/?page_size=200").status_code == 200
    assert api.get("/api/messages/?q=the&page_size=200").status_code == 200
