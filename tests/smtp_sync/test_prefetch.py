"""The prefetch thread: errors reach the consumer, nothing made is leaked, nothing runs on."""

import threading
import time

import pytest

from smtp_sync.prefetch import Prefetcher


def test_items_arrive_in_order_and_are_made_ahead():
    made = []

    def source():
        for i in range(5):
            made.append(i)
            yield i

    with Prefetcher(source()) as items:
        first = next(iter(items))
        deadline = time.monotonic() + 5
        while len(made) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first == 0 and made[:2] == [0, 1], "the next item is made while this one is used"
        assert [first, *items] == [0, 1, 2, 3, 4]


def test_an_error_in_the_source_is_raised_in_the_consumer():
    def source():
        yield 1
        raise ConnectionError("server went away")

    got = []
    with pytest.raises(ConnectionError, match="went away"), Prefetcher(source()) as items:
        got.extend(items)
    assert got == [1]


def test_stopping_early_discards_unused_items_and_closes_the_source():
    closed = threading.Event()
    discarded = []

    def source():
        try:
            yield from range(100)
        finally:
            closed.set()

    with pytest.raises(RuntimeError), Prefetcher(source(), discard=discarded.append) as items:
        for item in items:
            if item == 2:
                raise RuntimeError("budget used")
    assert closed.is_set()
    assert discarded and set(discarded) <= {3, 4}, "made but never used: handed back"
    assert not any(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())
