"""Writes whose result nobody reads, sent with the next statement instead of on their own.

Storing the one message an IDLE notice brings is a dozen small statements, and each costs a
round trip to PostgreSQL more than its own work. Inside `writes_held()`, the statements run
within `hold()` (and savepoint commands) are kept, then sent in front of the next statement
the connection sends, in the same round trip (psycopg2 sends a string of statements as one
simple query; they run in order, and the last one's result is the one returned). They run
exactly where they would have, before everything after them; only an error in one of them is
raised by the statement that carried it. What is still held when the block ends is sent then;
on an exception it is dropped, with the transaction the caller rolls back.

Open the block inside the transaction it writes in (`with transaction.atomic():` first): a
commit is not a statement, and nothing may be held when it comes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection
from django.db.transaction import TransactionManagementError

_SAVEPOINT_COMMANDS = ("SAVEPOINT ", "RELEASE SAVEPOINT ")


class _State(threading.local):
    def __init__(self) -> None:
        self.held: list[str] = []
        self.marks: list[int] = []  # per open block: how much was held when it began
        self.holding = 0


_state = _State()


@contextmanager
def writes_held() -> Iterator[None]:
    """A block whose `hold()` statements and savepoint commands go with the next statement.
    Nested blocks share the outermost one's; an exception drops what its own block held."""
    if not connection.in_atomic_block:
        raise TransactionManagementError("writes_held() belongs inside transaction.atomic()")
    state = _state
    state.marks.append(len(state.held))
    try:
        if len(state.marks) > 1:
            yield
        else:
            with connection.execute_wrapper(_carry):
                yield
                if state.held:
                    held = ";\n".join(state.held)
                    state.held.clear()
                    with connection.cursor() as cursor:
                        cursor.execute(held)
    except BaseException:
        del state.held[state.marks[-1] :]
        raise
    finally:
        state.marks.pop()
        if not state.marks:
            state.held.clear()


@contextmanager
def hold() -> Iterator[None]:
    """Statements run in this block are held by the open `writes_held()` block, if any (else
    sent as usual). For writes only: a held statement returns no rows and no row count."""
    state = _state
    if not state.marks:
        yield
        return
    state.holding += 1
    try:
        yield
    finally:
        state.holding -= 1


def _carry(execute, sql: str, params: Any, many: bool, context: dict) -> Any:
    state = _state
    if not many and (state.holding or sql.startswith(_SAVEPOINT_COMMANDS)):
        raw = context["cursor"].cursor
        text = raw.mogrify(sql, params) if params is not None else sql.encode()
        state.held.append(text.decode("utf-8"))
        return None
    if not state.held:
        return execute(sql, params, many, context)
    prefix = ";\n".join(state.held)
    state.held.clear()
    state.marks[:] = [0] * len(state.marks)
    if many:
        execute(prefix, None, False, context)
        return execute(sql, params, many, context)
    if params is not None:
        prefix = prefix.replace("%", "%%")
    return execute(f"{prefix};\n{sql}", params, many, context)
