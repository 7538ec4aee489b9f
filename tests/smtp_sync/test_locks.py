"""One sync per account: the Redis lock, kept alive by its heartbeat, and the requests it
coalesces (emailplatform.syncstate)."""

import time

import pytest

from emailplatform import syncstate
from emailplatform.synclock import SyncLockLost, account_sync_lock


@pytest.fixture
def account_id():
    ident = 900_000 + int(time.time() * 1000) % 100_000
    syncstate.forget_account(ident)
    syncstate.client().delete(syncstate.lock_key(ident))
    yield ident
    syncstate.forget_account(ident)


def test_one_holder_at_a_time_and_requests_wait_for_it(settings, account_id):
    settings.SYNC_LOCK_TTL_SECONDS = 30
    with account_sync_lock(account_id) as held:
        assert held is not None
        with account_sync_lock(account_id) as second:
            assert second is None
        # A request while the lock is held is recorded for the holder, nothing is enqueued.
        token = syncstate.new_token()
        assert syncstate.request(account_id, syncstate.INCREMENTAL, token) == 0
        assert syncstate.request(account_id, syncstate.FULL, token) == 0
        assert held.take_wants() == {syncstate.FULL, syncstate.INCREMENTAL}
        assert held.take_wants() == set()
    assert not syncstate.client().exists(syncstate.lock_key(account_id))


def test_requests_coalesce_into_one_queued_task_per_route(account_id):
    outcomes = [
        syncstate.request(account_id, kind, syncstate.new_token())
        for kind in [syncstate.FULL, syncstate.INCREMENTAL] * 5
    ]
    assert outcomes == [syncstate.REQUEST_ENQUEUE] * 2 + [syncstate.REQUEST_QUEUED] * 8
    assert syncstate.wants(account_id) == {syncstate.FULL, syncstate.INCREMENTAL}


def test_heartbeat_keeps_the_lock_past_its_ttl(settings, account_id):
    settings.SYNC_LOCK_TTL_SECONDS = 1
    with account_sync_lock(account_id) as held:
        time.sleep(2.5)  # one slow batch, longer than the TTL: the heartbeat extended it
        held.extend()
        with account_sync_lock(account_id) as other:
            assert other is None


def test_a_lock_taken_by_another_sync_stops_the_first(settings, account_id):
    settings.SYNC_LOCK_TTL_SECONDS = 1
    with account_sync_lock(account_id) as held:
        # Redis forgot the lock (a restart) and another sync took it before our heartbeat.
        syncstate.client().set(syncstate.lock_key(account_id), "another", px=5000)
        time.sleep(0.6)
        with pytest.raises(SyncLockLost):
            held.extend()
    assert syncstate.client().get(syncstate.lock_key(account_id)) == b"another"


def test_a_lock_forgotten_by_redis_is_taken_again_by_its_heartbeat(settings, account_id):
    settings.SYNC_LOCK_TTL_SECONDS = 1
    with account_sync_lock(account_id) as held:
        syncstate.client().delete(syncstate.lock_key(account_id))
        time.sleep(0.6)
        held.extend()
        assert syncstate.client().get(syncstate.lock_key(account_id)) == held.token.encode()


def test_requests_made_during_the_last_pass_are_published_at_release(
    settings, account_id, monkeypatch
):
    from emailplatform import topics

    published = []
    monkeypatch.setattr(
        topics, "sync_request_now", lambda a, p, *, kind, options=None: published.append(kind)
    )
    with account_sync_lock(account_id) as held:
        held.take_wants()
        syncstate.request(account_id, syncstate.INCREMENTAL, syncstate.new_token())
    assert published == [syncstate.INCREMENTAL]
