"""A rate-limit storm during a full sync: Gmail's 429 and 403 userRateLimitExceeded answers are
backed off, the sync completes, and the platform's shared quota bucket keeps the mailbox under
its units per second all along."""

from __future__ import annotations

import pytest

from gmail_sync.services import gmail_sync_account
from tests.gmail_sync.factories import assert_store_matches_gmail
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db(transaction=True)

UNITS_PER_SECOND = 200


def busiest_second(spent: list[tuple[float, int]]) -> int:
    """The most units spent in any one-second window of (time, units) calls."""
    best, start = 0, 0
    for end in range(len(spent)):
        while spent[end][0] - spent[start][0] >= 1.0:
            start += 1
        best = max(best, sum(units for _, units in spent[start : end + 1]))
    return best


def test_rate_limit_storm_backs_off_and_stays_under_the_quota(gmail_user, settings):
    settings.GMAIL_QUOTA_UNITS_PER_SECOND = UNITS_PER_SECOND
    box, server = gmail_user.box, gmail_user.server
    for i in range(200):
        box.add_message(make_mail(f"m{i}", message_id=f"<q{i}@x>", minutes=i), ["INBOX"])
    # The next six calls are refused: three 429 rateLimitExceeded, then three 403
    # userRateLimitExceeded (one call tried seven times is GMAIL_MAX_RETRIES' limit).
    server.rate_limit_next(3)
    server.user_rate_limit_next(3)

    report = gmail_sync_account(gmail_user.account.pk, full=True)

    assert report.done
    assert_store_matches_gmail(gmail_user.account, box)
    assert server.calls[:7] == ["GET profile"] * 7  # refused six times, then answered
    spent = list(server.quota._window[box.email])
    assert sum(units for _, units in spent) >= 200 * 5
    # The bucket holds one second's units and refills at that rate: never more than two
    # seconds' worth in any second, though 1,000 units of gets were asked for at once.
    assert busiest_second(spent) <= 2 * UNITS_PER_SECOND
