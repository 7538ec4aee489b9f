"""A page of a user's message list, as one SQL statement put together from fixed clauses.

The list is the API's hottest read. Composed with the ORM (a FilteredRelation to the folder's
locations, scoping subqueries, values(), the keyset condition), building and compiling its
query took longer than PostgreSQL took to answer it: about 5 ms of Python per request against
2-7 ms of SQL at a million messages. Here only the parameters vary.

What the statement guarantees:
- Scoped to the user: a message of an account the user does not own, or of an account being
  deleted, is never returned.
- A folder's list is driven by the folder's locations in their own date order (the index
  `location_folder_newest_page`) and scoped through the folder only: a condition on the
  messages' account as well would make PostgreSQL take "in this folder" and "of this account"
  as independent and sort the whole folder. A message held twice in the folder (two UIDs)
  comes once, through its first location.
- Ordered newest first by (sort date, id), or, ranked, by search rank first; `position` is a
  keyset (the previous page's last values of that ordering), so a page is read from its
  position, never walked to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Field, FloatField

from .models import Account, Folder, Message, MessageLocation
from .selectors import SEARCH_CONFIG, SUMMARY_COLUMNS

M = Message._meta.db_table
L = MessageLocation._meta.db_table
F = Folder._meta.db_table
A = Account._meta.db_table

_COLUMNS = ", ".join(f'm."{column}"' for column in SUMMARY_COLUMNS)
_FOLDER_NAMES = f"""ARRAY(SELECT DISTINCT f2.name FROM {L} l2 JOIN {F} f2 ON f2.id = l2.folder_id
                   WHERE l2.message_id = m.id ORDER BY f2.name) AS folder_names"""
_VISIBLE_ACCOUNTS = f"SELECT a.id FROM {A} a WHERE a.owner_id = %s AND a.status <> 'deleting'"
# Recipients are JSON lists of {"name", "address"}: match the values, never the keys.
_RECIPIENT = """EXISTS (SELECT 1 FROM jsonb_array_elements(m."to" || m.cc) AS p
                 WHERE p ->> 'address' ILIKE %s OR p ->> 'name' ILIKE %s)"""
_RANK = "ts_rank(m.search_vector, tsq)::float8"

# The fields a page is ordered by, with the model field that reads a cursor's value back.
ORDER_FIELDS: dict[str, Field] = {
    "search_rank": FloatField(),
    "page_sort_date": Message._meta.get_field("sort_date"),
    "id": Message._meta.get_field("id"),
}


@dataclass(frozen=True)
class MessageQuery:
    """What a list asks for; every text is matched as given (no wildcards of its own)."""

    account: int | None = None
    folder: int | None = None
    thread: int | None = None
    unread: bool | None = None
    flagged: bool | None = None
    has_attachments: bool | None = None
    to: str = ""
    subject: str = ""
    sender: str = ""
    after: datetime | None = None
    before: datetime | None = None
    search: str = ""
    ranked: bool = False

    @property
    def ordering(self) -> list[tuple[str, bool]]:
        """(field, descending) pairs, the last one unique."""
        rank = [("search_rank", True)] if self.ranked and self.search else []
        return [*rank, ("page_sort_date", True), ("id", True)]


def like(text: str) -> str:
    """A LIKE pattern that matches `text` anywhere, its own % _ and \\ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def message_page_sql(
    *,
    user_id: int,
    query: MessageQuery,
    position: list[Any] | None = None,
    reverse: bool = False,
    limit: int = 51,
) -> tuple[str, list[Any]]:
    """The statement and its parameters (see message_page)."""
    sources, source_params = [f"{M} m"], []
    where, params = [], []
    if query.folder is None:
        where.append(f"m.account_id IN ({_VISIBLE_ACCOUNTS})")
        params.append(user_id)
        date = "m.sort_date"
    else:
        sources[0] += f" JOIN {L} l ON l.message_id = m.id AND l.folder_id = %s"
        source_params.append(query.folder)
        where.append(
            f"l.folder_id IN (SELECT f.id FROM {F} f"
            f" WHERE f.id = %s AND f.account_id IN ({_VISIBLE_ACCOUNTS}))"
        )
        where.append(
            f"NOT EXISTS (SELECT 1 FROM {L} e"
            " WHERE e.folder_id = %s AND e.message_id = m.id AND e.id < l.id)"
        )
        params += [query.folder, user_id, query.folder]
        date = "l.sort_date"
    for condition, values in _conditions(query):
        where.append(condition)
        params += values
    if query.search:
        sources.append(f"websearch_to_tsquery('{SEARCH_CONFIG}'::regconfig, %s) AS tsq")
        source_params.append(query.search)
        where.append("m.search_vector @@ tsq")

    # A folder's list orders by its locations' copy of the date, and pages by what it orders by.
    expressions = {"search_rank": _RANK, "page_sort_date": date, "id": "m.id"}
    ordered = [(expressions[name], desc) for name, desc in query.ordering]
    if position is not None:
        condition, values = _after(ordered, position, reverse)
        where.append(condition)
        params += values
    order = ", ".join(f"{expr} {'DESC' if desc != reverse else 'ASC'}" for expr, desc in ordered)
    rank = f", {_RANK} AS search_rank" if query.ranked and query.search else ""
    sql = (
        f"SELECT {_COLUMNS}, {_FOLDER_NAMES}, {date} AS page_sort_date{rank}"
        f" FROM {', '.join(sources)}"
        f" WHERE {' AND '.join(where)} ORDER BY {order} LIMIT %s"
    )
    return sql, [*source_params, *params, limit]


def message_page(
    *,
    user_id: int,
    query: MessageQuery,
    position: list[Any] | None = None,
    reverse: bool = False,
    limit: int = 51,
) -> list[dict[str, Any]]:
    """Up to `limit` messages after `position` (before it with `reverse`, nearest first), as
    rows of selectors.SUMMARY_COLUMNS with `folder_names` (sorted) and the values the page is
    ordered by (`page_sort_date`, and `search_rank` when ranked).
    """
    sql, params = message_page_sql(
        user_id=user_id, query=query, position=position, reverse=reverse, limit=limit
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [column.name for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:  # Django's connection hands jsonb over as text
        for column in ("to", "cc"):
            if isinstance(row[column], str):
                row[column] = json.loads(row[column])
    return rows


def _conditions(query: MessageQuery) -> list[tuple[str, list[Any]]]:
    conditions: list[tuple[str, list[Any]]] = []
    if query.account is not None:
        # A bigint, as the column: btree_gin's (account, search_vector) index answers only
        # bigint = bigint.
        conditions.append(("m.account_id = %s::bigint", [query.account]))
    if query.thread is not None:
        conditions.append(("m.thread_id = %s", [query.thread]))
    for column, value in (
        ("is_read", None if query.unread is None else not query.unread),
        ("is_flagged", query.flagged),
        ("has_attachments", query.has_attachments),
    ):
        if value is not None:
            conditions.append((f"m.{column} = %s", [value]))
    if query.to:
        conditions.append((_RECIPIENT, [like(query.to)] * 2))
    if query.subject:
        conditions.append(("UPPER(m.subject::text) LIKE UPPER(%s)", [like(query.subject)]))
    if query.sender:
        pattern = like(query.sender)
        conditions.append(
            (
                "(UPPER(m.from_name::text) LIKE UPPER(%s)"
                " OR UPPER(m.from_address::text) LIKE UPPER(%s))",
                [pattern, pattern],
            )
        )
    if query.after is not None:
        conditions.append(("m.sort_date >= %s", [query.after]))
    if query.before is not None:
        conditions.append(("m.sort_date < %s", [query.before]))
    return conditions


def _after(
    ordered: list[tuple[str, bool]], position: list[Any], reverse: bool
) -> tuple[str, list[Any]]:
    """Rows strictly after `position` in the ordering (before it with `reverse`), and a bound
    on the first field that an index can start from."""
    alternatives, params = [], []
    for index, (expr, desc) in enumerate(ordered):
        terms = [f"{earlier} = %s" for earlier, _ in ordered[:index]]
        terms.append(f"{expr} {'<' if desc != reverse else '>'} %s")
        alternatives.append(f"({' AND '.join(terms)})")
        params += position[: index + 1]
    first, desc = ordered[0]
    bound = f"{first} {'<=' if desc != reverse else '>='} %s"
    return f"(({' OR '.join(alternatives)}) AND {bound})", [*params, position[0]]
