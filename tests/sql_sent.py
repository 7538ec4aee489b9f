"""What a block sends to PostgreSQL: one entry per statement string psycopg2 executes.

Django's query log cannot say this: it lists statements held by messages.held_writes as if
sent alone, while they travel with the next one. BEGIN and COMMIT are not executed through a
cursor: add a pair per transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import connection


@dataclass
class Sent:
    sql: str
    seconds: float


@contextmanager
def statements_sent() -> Iterator[list[Sent]]:
    connection.ensure_connection()
    raw = connection.connection
    base = raw.cursor_factory
    sent: list[Sent] = []

    class Counting(base):  # type: ignore[misc, valid-type]
        def execute(self, query, vars=None):  # noqa: A002  (psycopg2's name)
            start = time.perf_counter()
            try:
                return super().execute(query, vars)
            finally:
                text = self.query.decode() if self.query else str(query)
                sent.append(Sent(text, time.perf_counter() - start))

        def executemany(self, query, vars_list):
            start = time.perf_counter()
            try:
                return super().executemany(query, vars_list)
            finally:
                sent.append(Sent(str(query), time.perf_counter() - start))

    raw.cursor_factory = Counting
    try:
        yield sent
    finally:
        raw.cursor_factory = base
