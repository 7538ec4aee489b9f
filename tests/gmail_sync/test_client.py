"""GmailClient against the local Gmail API: batches, retries of failed parts, errors by kind,
the shared quota."""

from __future__ import annotations

import pytest

from gmail_sync.client import (
    GmailAuthError,
    GmailClient,
    GmailHistoryExpired,
    GmailUnavailable,
    decode_raw,
)
from gmail_sync.quota import QuotaLimiter
from tests.mailfactory import make_mail


@pytest.fixture
def mailbox(gmail_settings):
    box, refresh_token = gmail_settings.add_user("alice@gmail.com")
    return box, GmailClient(refresh_token, "alice@gmail.com")


def test_lists_and_gets_in_batches(gmail_settings, mailbox, settings):
    box, client = mailbox
    settings.GMAIL_BATCH_SIZE = 7
    client = GmailClient(client._refresh_token, box.email)
    sent = [box.add_message(make_mail(f"m{i}", message_id=f"<m{i}@x>")) for i in range(20)]
    page = client.list_messages(max_results=500)
    assert {m["id"] for m in page.messages} == {m.id for m in sent}
    result = client.get_messages([m["id"] for m in page.messages])
    assert set(result.found) == {m.id for m in sent} and not result.gone
    one = result.found[sent[3].id]
    assert decode_raw(one["raw"]) == sent[3].raw
    assert one["threadId"] == sent[3].thread_id and "INBOX" in one["labelIds"]
    assert client.counts.http_requests == 1 + 3  # one list page, 20 gets in batches of 7


def test_failed_parts_retried_alone_and_gone_reported(gmail_settings, mailbox):
    box, client = mailbox
    kept = [box.add_message(make_mail(f"m{i}")) for i in range(5)]
    deleted = box.add_message(make_mail("gone"))
    box.delete(deleted.id)
    gmail_settings.rate_limit_next(2)  # two parts of the batch answer 429
    result = client.get_messages([m.id for m in kept] + [deleted.id])
    assert set(result.found) == {m.id for m in kept}
    assert result.gone == {deleted.id}
    assert client.counts.retries == 1
    retried = [c for c in gmail_settings.calls if "messages/" in c]
    assert len(retried) == 6 + 2  # the retry asked only for the two failed parts


def test_persistent_server_errors_become_unavailable(gmail_settings, mailbox, settings):
    _, client = mailbox
    client.config = client.config.__class__(**{**client.config.__dict__, "max_retries": 2})
    gmail_settings.backend_error_next(10)
    with pytest.raises(GmailUnavailable):
        client.profile()
    assert client.counts.retries == 2


def test_revoked_refresh_token_is_an_auth_error(gmail_settings):
    box, refresh_token = gmail_settings.add_user("bob@gmail.com")
    gmail_settings.tokens.revoke(refresh_token)
    with pytest.raises(GmailAuthError, match="connect the account again"):
        GmailClient(refresh_token, box.email).profile()


def test_stale_history_id_is_expired(gmail_settings, mailbox):
    box, client = mailbox
    start = int(client.profile()["historyId"])
    box.add_message(make_mail("new"))
    assert [r for r in client.history_page(start).records if r.get("messagesAdded")]
    box.expire_history()
    with pytest.raises(GmailHistoryExpired):
        client.history_page(start)


def test_quota_is_shared_between_clients_of_one_mailbox(gmail_settings):
    """Two limiters of one mailbox draw from one bucket: 2 x 300 units at 250 units/s take
    about 1.4 s (the first 250 are in the bucket), whoever spends them."""
    import time

    first, second = QuotaLimiter("carol@gmail.com"), QuotaLimiter("carol@gmail.com")
    other = QuotaLimiter("dave@gmail.com")
    started = time.monotonic()
    for _ in range(6):
        first.acquire(50)
        second.acquire(50)
    other.acquire(250)  # another mailbox's bucket is full
    elapsed = time.monotonic() - started
    assert 1.2 < elapsed < 3.0
    assert other.waited == 0
