"""Gmail's per-user usage limit: quota units per rolling minute, each method at its price.

Off unless a test sets `per_user_per_minute` (Gmail's published limit is 15,000); the units
every user spent are counted either way, so a test can assert what a sync cost.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from tests.gmail_fake.errors import USER_RATE_LIMIT

GMAIL_PER_USER_PER_MINUTE = 15_000


class Quota:
    def __init__(self) -> None:
        self.per_user_per_minute: int | None = None
        self.used: dict[str, int] = defaultdict(int)
        self._window: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
        self._lock = threading.Lock()

    def spend(self, email: str, units: int) -> None:
        """Count a call's units, or raise userRateLimitExceeded when the minute is full."""
        with self._lock:
            now = time.monotonic()
            window = self._window[email]
            while window and window[0][0] <= now - 60:
                window.popleft()
            limit = self.per_user_per_minute
            if limit is not None and sum(u for _, u in window) + units > limit:
                raise USER_RATE_LIMIT.error()
            window.append((now, units))
            self.used[email] += units

    def reset(self) -> None:
        with self._lock:
            self.per_user_per_minute = None
            self.used.clear()
            self._window.clear()


__all__ = ["GMAIL_PER_USER_PER_MINUTE", "Quota"]
