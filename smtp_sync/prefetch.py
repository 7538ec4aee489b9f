"""Run an iterator a step ahead of its consumer, in a thread.

A sync fetches a batch (network waits) and parses it (Python work), then writes it (waits on
PostgreSQL, and compression and hashing, which release the GIL). With the next batch fetched and
parsed while the current one is written, those overlap instead of adding up.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_ITEM, _ERROR, _END = "item", "error", "end"
_POLL_SECONDS = 0.1


class Prefetcher(Generic[T]):
    """Iterate `with Prefetcher(source, discard=...) as items: for item in items: ...`.

    The source runs in a background thread, at most DEPTH items ahead; its exceptions are
    raised in the consumer. When the consumer stops early, the source is closed, and items
    made but never consumed are passed to DISCARD (to remove their temporary files). Leaving
    the `with` block waits for the thread, so whatever the source uses (an IMAP connection)
    is the consumer's again afterwards."""

    def __init__(
        self,
        source: Iterator[T],
        *,
        depth: int = 1,
        discard: Callable[[T], None] = lambda item: None,
    ) -> None:
        self._source = source
        self._discard = discard
        self._queue: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)

    def __enter__(self) -> Prefetcher[T]:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        while True:
            try:
                kind, value = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == _ITEM:
                self._discard(value)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[T]:
        while True:
            kind, value = self._queue.get()
            if kind == _ITEM:
                yield value  # type: ignore[misc]
            elif kind == _ERROR:
                raise value  # type: ignore[misc]
            else:
                return

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(_ITEM, item):
                    self._discard(item)
                    return
            self._put(_END, None)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(_ERROR, exc)
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()

    def _put(self, kind: str, value: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put((kind, value), timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False
