"""One sync per account: the Redis lock coalesces triggers and survives a slow batch."""

import time

import pytest

from smtp_sync.locks import SyncLockLost, account_sync_lock


def test_second_trigger_coalesces_into_a_pending_pass(settings):
    settings.SYNC_LOCK_TTL_SECONDS = 30
    with account_sync_lock(9001) as held:
        assert held is not None
        with account_sync_lock(9001) as second:
            assert second is None
        assert held.take_pending() is True
        assert held.take_pending() is False


def test_expired_lock_is_retaken_unless_another_sync_has_it(settings):
    settings.SYNC_LOCK_TTL_SECONDS = 1
    with account_sync_lock(9002) as held:
        time.sleep(1.2)
        held.extend()  # nobody took it meanwhile: ours again
        time.sleep(1.2)
        with account_sync_lock(9002) as other:
            assert other is not None
            with pytest.raises(SyncLockLost):
                held.extend()
