"""Thread assignment: provider thread ids where given, else Message-ID / In-Reply-To / References.

The reference graph is JWZ's idea without the subject heuristics: messages that share any
Message-ID (their own or one they reference) belong to one thread. `ThreadReference` remembers
every id seen per thread, so a parent that arrives after its replies joins (and merges) the
threads its replies started. Callers hold the account's ingest lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from django.db import connection

from .held_writes import hold
from .models import Account, Message, Thread, ThreadReference


@dataclass
class ThreadInput:
    own_id: str
    referenced_ids: list[str] = field(default_factory=list)
    provider_thread_id: str | None = None
    # The message's, when given: a thread it starts is created with its summary (no refresh).
    sort_date: datetime | None = None
    subject: str = ""
    snippet: str = ""


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class ThreadAssignment:
    thread_ids: list[int]
    created: set[int] = field(default_factory=set)
    merged_away: set[int] = field(default_factory=set)
    summarized: set[int] = field(default_factory=set)  # created with their summary


def _new_thread(account: Account, members: list[ThreadInput], **fields: object) -> Thread:
    """A thread for MEMBERS (in the order their messages are inserted), with its summary when
    they all carry theirs (see `refresh_thread_summaries` for what it is)."""
    if not members or any(m.sort_date is None for m in members):
        return Thread(account=account, **fields)
    order = sorted(range(len(members)), key=lambda i: (members[i].sort_date, i))
    return Thread(
        account=account,
        message_count=len(members),
        last_message_at=members[order[-1]].sort_date,
        snippet=members[order[-1]].snippet,
        subject=members[order[0]].subject,
        **fields,
    )


def _summarized(thread: Thread) -> bool:
    return thread.message_count > 0


def assign_threads(account: Account, inputs: list[ThreadInput]) -> ThreadAssignment:
    """A thread id for each input, creating and merging threads as needed."""
    result: list[int | None] = [None] * len(inputs)
    assignment = ThreadAssignment(thread_ids=[])
    _assign_provider_threads(account, inputs, result, assignment)
    _assign_reference_threads(account, inputs, result, assignment)
    assignment.thread_ids = cast(list[int], result)
    return assignment


def _assign_provider_threads(
    account: Account,
    inputs: list[ThreadInput],
    result: list[int | None],
    assignment: ThreadAssignment,
) -> None:
    wanted = {i.provider_thread_id for i in inputs if i.provider_thread_id}
    if not wanted:
        return
    existing = dict(
        Thread.objects.filter(account=account, provider_thread_id__in=wanted).values_list(
            "provider_thread_id", "id"
        )
    )
    created = Thread.objects.bulk_create(
        [
            _new_thread(
                account,
                [i for i in inputs if i.provider_thread_id == p],
                provider_thread_id=p,
            )
            for p in sorted(wanted - existing.keys())
        ]
    )
    existing.update({t.provider_thread_id: t.id for t in created})
    assignment.created.update(t.id for t in created)
    assignment.summarized.update(t.id for t in created if _summarized(t))
    for index, item in enumerate(inputs):
        if item.provider_thread_id:
            result[index] = existing[item.provider_thread_id]


def _assign_reference_threads(
    account: Account,
    inputs: list[ThreadInput],
    result: list[int | None],
    assignment: ThreadAssignment,
) -> None:
    pending = [index for index, item in enumerate(inputs) if item.provider_thread_id is None]
    if not pending:
        return
    all_ids = {mid for i in pending for mid in (inputs[i].own_id, *inputs[i].referenced_ids)}
    known = dict(
        ThreadReference.objects.filter(account=account, message_id_header__in=all_ids).values_list(
            "message_id_header", "thread_id"
        )
    )
    groups = _UnionFind()
    for index in pending:
        item = inputs[index]
        for ref in item.referenced_ids:
            groups.union(item.own_id, ref)
        groups.find(item.own_id)
    for mid, thread_id in known.items():
        groups.union(mid, f"~thread:{thread_id}")

    threads_of_root: dict[str, set[int]] = {}
    for mid, thread_id in known.items():
        threads_of_root.setdefault(groups.find(mid), set()).add(thread_id)

    members: dict[str, list[ThreadInput]] = {}
    for index in pending:
        members.setdefault(groups.find(inputs[index].own_id), []).append(inputs[index])
    new_roots = sorted(root for root in members if root not in threads_of_root)
    created = Thread.objects.bulk_create([_new_thread(account, members[r]) for r in new_roots])
    thread_of_root = {root: thread.id for root, thread in zip(new_roots, created, strict=True)}
    assignment.created.update(thread_of_root.values())
    assignment.summarized.update(t.id for t in created if _summarized(t))
    for root in members.keys() & threads_of_root.keys():
        target, *others = sorted(threads_of_root[root])
        if others:
            _merge_threads(target, others)
            assignment.merged_away.update(others)
        thread_of_root[root] = target

    for index in pending:
        result[index] = thread_of_root[groups.find(inputs[index].own_id)]

    new_refs = {}
    for index in pending:
        item = inputs[index]
        for mid in (item.own_id, *item.referenced_ids):
            if mid not in known:
                new_refs[mid] = result[index]
    with hold():  # sent with the next statement (see messages.held_writes)
        ThreadReference.objects.bulk_create(
            [
                ThreadReference(account=account, message_id_header=mid, thread_id=thread_id)
                for mid, thread_id in new_refs.items()
            ],
            ignore_conflicts=True,
        )


def _merge_threads(target: int, others: list[int]) -> None:
    Message.objects.filter(thread_id__in=others).update(thread_id=target)
    ThreadReference.objects.filter(thread_id__in=others).update(thread_id=target)
    Thread.objects.filter(id__in=others).delete()


def refresh_thread_summaries(thread_ids: set[int]) -> None:
    """Recompute count, last activity, subject (first message) and snippet (latest message)."""
    if not thread_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE mailstore_thread t
               SET message_count = agg.cnt,
                   last_message_at = agg.last,
                   snippet = latest.snippet,
                   subject = earliest.subject
              FROM (SELECT thread_id, count(*) AS cnt, max(sort_date) AS last
                      FROM mailstore_message WHERE thread_id = ANY(%s)
                     GROUP BY thread_id) agg
              CROSS JOIN LATERAL (SELECT snippet FROM mailstore_message m
                                   WHERE m.thread_id = agg.thread_id
                                   ORDER BY sort_date DESC, id DESC LIMIT 1) latest
              CROSS JOIN LATERAL (SELECT subject FROM mailstore_message m
                                   WHERE m.thread_id = agg.thread_id
                                   ORDER BY sort_date, id LIMIT 1) earliest
             WHERE t.id = agg.thread_id
            """,
            [sorted(thread_ids)],
        )
