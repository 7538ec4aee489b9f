#!/usr/bin/env python3
"""Ingest benchmark: how fast the store takes in mail, and what the parser and writes cost.

    make bench-ingest BENCH_ARGS="--messages 20000 --batch-size 500"
    python bench/ingest.py --messages 2000          (DATABASE_URL etc. already set)

The corpus (tests/data/corpus) is repeated to N messages. Every copy gets fresh ids, so every
message is new to the store: its Message-ID (added when missing) and the ids in In-Reply-To and
References get a per-copy suffix (threads stay within a copy, as in the corpus), and each
message carries an explicit provider id. Section 1 times plain parsing, `parse_message` and
`messages_upsert` on the same bytes; section 2 times writing `mailstore_message` rows alone
with bulk_create, execute_values and COPY, each in a transaction that is rolled back.

Bench data lives under the user `bench-ingest`: removed before the run and after it (unless
--keep). The database is migrated first.
"""

from __future__ import annotations

import argparse
import email
import io
import json
import math
import os
import platform
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")

import django  # noqa: E402

django.setup()

import psycopg2.extras  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, models, reset_queries, transaction  # noqa: E402

from emailplatform.topics import IncomingMessage  # noqa: E402
from messages.ingest import flag_values, messages_upsert  # noqa: E402
from messages.mime import ParsedMessage, parse_message  # noqa: E402
from messages.mime_stream import parse_message_bytes  # noqa: E402
from messages.models import Account, Message, Thread  # noqa: E402

CORPUS_DIR = ROOT / "tests" / "data" / "corpus"
BENCH_USERNAME = "bench-ingest"
BENCH_FOLDER = "INBOX"

# What the standard library parser takes for a header line (email.feedparser.headerRE): the
# first line that is not one ends the header block, blank or not.
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
# A Message-ID, In-Reply-To or References header with its folded continuation lines.
_ID_HEADER = re.compile(
    rb"^(message-id|in-reply-to|references)([ \t]*:)([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)",
    re.IGNORECASE | re.MULTILINE,
)
_ID_TOKEN = re.compile(rb"<([^<>\s]+)>")


# Corpus and fresh copies ----------------------------------------------------------------------


def corpus_files(corpus_dir: Path = CORPUS_DIR) -> list[Path]:
    """Every message of the corpus: regular files except README.md and dotfiles."""
    return sorted(
        p
        for p in corpus_dir.rglob("*")
        if p.is_file() and p.name != "README.md" and not p.name.startswith(".")
    )


def header_block_end(raw: bytes) -> int:
    """Offset where the header block ends, as the standard library parser sees it."""
    pos = 0
    while pos < len(raw):
        newline = raw.find(b"\n", pos)
        end = len(raw) if newline < 0 else newline + 1
        line = raw[pos:end]
        if not line.strip(b"\r\n") or not _HEADER_LINE.match(line):
            return pos
        pos = end
    return pos


def _tagged_id(token: re.Match[bytes], suffix: bytes) -> bytes:
    # In the local part: a suffix after the domain would break domain literals ([1.2.3.4]).
    local, at, domain = token.group(1).partition(b"@")
    return b"<" + local + suffix + at + domain + b">"


def with_fresh_ids(raw: bytes, tag: str, fallback_id: str) -> bytes:
    """The message with a per-copy tag in every id of Message-ID, In-Reply-To and References.

    `<local@domain>` becomes `<local.TAG@domain>`, so replies still find their parents within
    a copy. A message without a usable Message-ID gets `<fallback_id>` (after an mbox `From `
    line if there is one). Only the header block changes; line endings are kept.
    """
    end = header_block_end(raw)
    head, rest = raw[:end], raw[end:]
    suffix = b"." + tag.encode("ascii")
    new_id = b"<" + fallback_id.encode("ascii") + b">"
    seen_message_id = False

    def rewrite(match: re.Match[bytes]) -> bytes:
        nonlocal seen_message_id
        name, colon, value = match.groups()
        if name.lower() == b"message-id" and not seen_message_id:
            seen_message_id = True
            if not _ID_TOKEN.search(value):
                return name + colon + b" " + new_id
        return name + colon + _ID_TOKEN.sub(lambda t: _tagged_id(t, suffix), value)

    head = _ID_HEADER.sub(rewrite, head)
    if not seen_message_id:
        first_eol = head.find(b"\n")
        eol = b"\r\n" if first_eol > 0 and head[first_eol - 1 : first_eol] == b"\r" else b"\n"
        at = first_eol + 1 if head.startswith(b"From ") and first_eol >= 0 else 0
        head = head[:at] + b"Message-ID: " + new_id + eol + head[at:]
    return head + rest


def make_messages(corpus: Sequence[bytes], count: int, run_tag: str) -> list[bytes]:
    """`count` messages: the corpus over and over, each copy with its own ids."""
    out = []
    for i in range(count):
        copy, index = divmod(i, len(corpus))
        tag = f"{run_tag}c{copy}"
        out.append(with_fresh_ids(corpus[index], tag, f"bench.{tag}.{index}@bench.invalid"))
    return out


# Section 1: parse and ingest ------------------------------------------------------------------


@dataclass
class Timing:
    label: str
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else float("inf")


def time_plain_parse(raws: Sequence[bytes]) -> Timing:
    """The standard library parser alone (headers stay unparsed until read)."""
    start = time.perf_counter()
    for raw in raws:
        email.message_from_bytes(raw, policy=policy.default)
    return Timing("email.message_from_bytes", len(raws), time.perf_counter() - start)


def time_parse_message(
    raws: Sequence[bytes],
    keep: int,
    parse: Callable[[bytes], ParsedMessage] = parse_message,
    label: str = "messages.mime.parse_message",
) -> tuple[Timing, list[ParsedMessage]]:
    """PARSE (`parse_message`) on every message; also returns the first `keep` results."""
    kept: list[ParsedMessage] = []
    start = time.perf_counter()
    for raw in raws:
        parsed = parse(raw)
        if len(kept) < keep:
            kept.append(parsed)
    return Timing(label, len(raws), time.perf_counter() - start), kept


def remove_bench_data() -> float:
    """Delete the bench user and everything it owns; return the seconds it took."""
    start = time.perf_counter()
    with transaction.atomic():
        get_user_model().objects.filter(username=BENCH_USERNAME).delete()
    return time.perf_counter() - start


def bench_account(run_tag: str) -> Account:
    user = get_user_model().objects.create_user(BENCH_USERNAME, f"{BENCH_USERNAME}@bench.invalid")
    return Account.objects.create(
        owner=user, provider=Account.Provider.LOCAL, email_address=f"{run_tag}@bench.invalid"
    )


def time_ingest(
    account: Account, raws: Sequence[bytes], batch_size: int, run_tag: str
) -> tuple[Timing, dict[str, int]]:
    """`messages_upsert` in batches, as the EmailNewMessage consumer calls it (timed alone)."""
    totals = {"created": 0, "updated": 0, "unchanged": 0, "damaged": 0}
    seconds = 0.0
    next_report = 0.2
    for offset in range(0, len(raws), batch_size):
        items = [
            IncomingMessage(
                raw=raw,
                provider_id=f"bench:{run_tag}:{offset + i}",
                folders=[BENCH_FOLDER],
                uid=offset + i + 1,
                flags=[],
            )
            for i, raw in enumerate(raws[offset : offset + batch_size])
        ]
        start = time.perf_counter()
        result = messages_upsert(account=account, items=items)
        seconds += time.perf_counter() - start
        for key in totals:
            totals[key] += getattr(result, key)
        reset_queries()  # in case DEBUG is on
        done = min(offset + batch_size, len(raws)) / len(raws)
        if done >= next_report:
            print(f"  ingest {done:4.0%}  {seconds:7.1f}s", file=sys.stderr, flush=True)
            next_report += 0.2
    return Timing("messages_upsert (full ingest)", len(raws), seconds), totals


# Section 2: the mailstore_message write path ---------------------------------------------------

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def message_fields(
    account: Account, thread_id: int, parsed: ParsedMessage, provider_id: str
) -> dict[str, Any]:
    """The column values ingest writes for a new message (flags off, no provider date)."""
    now = datetime.now(UTC)
    return {
        "account_id": account.pk,
        "thread_id": thread_id,
        "provider_id": provider_id,
        "message_id_header": parsed.message_id[:998],
        "in_reply_to": parsed.in_reply_to[:998],
        "references": parsed.references,
        "subject": parsed.subject,
        "from_name": parsed.from_name[:998],
        "from_address": parsed.from_address[:998],
        "to": parsed.to,
        "cc": parsed.cc,
        "bcc": parsed.bcc,
        "reply_to": parsed.reply_to,
        "date": parsed.date,
        "internal_date": None,
        "sort_date": parsed.date or now,
        "snippet": parsed.snippet,
        "body_text": parsed.body_text,
        "body_html": parsed.body_html,
        "size": parsed.size,
        "has_attachments": any(not a.is_inline for a in parsed.attachments),
        "defects": parsed.defects,
        **flag_values([]),
    }


def _columns() -> list[models.Field]:
    return [f for f in Message._meta.concrete_fields if not f.primary_key and not f.generated]


def _value(field: models.Field, obj: Message, now: datetime) -> Any:
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return now
    return getattr(obj, field.attname)


def write_bulk_create(objs: list[Message]) -> int:
    """Django's bulk_create, with the batch size ingest uses."""
    Message.objects.bulk_create(objs, batch_size=1000)
    return sum(1 for o in objs if o.pk)


def write_execute_values(objs: list[Message]) -> int:
    """psycopg2 execute_values: one multi-row INSERT ... RETURNING id per page."""
    columns = _columns()
    now = datetime.now(UTC)
    names = ", ".join(connection.ops.quote_name(f.column) for f in columns)
    sql = f"INSERT INTO {Message._meta.db_table} ({names}) VALUES %s RETURNING id"
    rows = [
        tuple(
            psycopg2.extras.Json(_value(f, o, now))
            if isinstance(f, models.JSONField)
            else _value(f, o, now)
            for f in columns
        )
        for o in objs
    ]
    with connection.connection.cursor() as cursor:
        ids = psycopg2.extras.execute_values(cursor, sql, rows, page_size=1000, fetch=True)
    return len(ids)


def _copy_text(value: Any, is_json: bool) -> str:
    if value is None:
        return "\\N"
    if is_json:
        return json.dumps(value).translate(_COPY_ESCAPES)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, list):  # a PostgreSQL array column (e.g. Message.server_ids)
        items = ",".join(json.dumps(str(item)) for item in value)
        return ("{" + items + "}").translate(_COPY_ESCAPES)
    return str(value)


def write_copy(objs: list[Message]) -> int:
    """COPY FROM STDIN in text format, ids taken from the table's sequence first (so the
    caller knows them, as ingest needs for raw messages and attachments)."""
    columns = _columns()
    json_columns = [isinstance(f, models.JSONField) for f in columns]
    now = datetime.now(UTC)
    table = Message._meta.db_table
    with connection.connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [table, len(objs)],
        )
        ids = [row[0] for row in cursor.fetchall()]
        buffer = io.StringIO()
        for pk, obj in zip(ids, objs, strict=True):
            values = [str(pk)]
            values += [
                _copy_text(_value(f, obj, now), is_json)
                for f, is_json in zip(columns, json_columns, strict=True)
            ]
            buffer.write("\t".join(values))
            buffer.write("\n")
        buffer.seek(0)
        names = ", ".join(connection.ops.quote_name(f.column) for f in [Message._meta.pk, *columns])
        cursor.copy_expert(f"COPY {table} ({names}) FROM STDIN", buffer)
    return len(ids)


def _rows_checksum(account: Account, prefix: str) -> str:
    """What a method wrote, minus what differs by design (id, timestamps)."""
    skip = {"id", "created_at", "updated_at"}
    names = ", ".join(
        connection.ops.quote_name(f.column)
        for f in Message._meta.concrete_fields
        if f.column not in skip
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t.provider_id)) FROM "
            f"(SELECT {names} FROM {Message._meta.db_table}"
            f" WHERE account_id = %s AND provider_id LIKE %s) t",
            [account.pk, prefix + "%"],
        )
        count, digest = cursor.fetchone()
    return f"{count}:{digest}"


def time_writes(
    account: Account, parsed: Sequence[ParsedMessage], rows: int, rounds: int, run_tag: str
) -> tuple[list[Timing], bool]:
    """Each write method on the same rows, `rounds` times interleaved, best time kept; every
    attempt is rolled back. Also says whether all methods stored identical rows."""
    thread = Thread.objects.filter(account=account).first() or Thread.objects.create(
        account=account
    )
    prefix = f"bench-write:{run_tag}:"
    fields = [
        message_fields(account, thread.pk, parsed[i % len(parsed)], f"{prefix}{i:08d}")
        for i in range(rows)
    ]
    methods: list[tuple[str, Callable[[list[Message]], int]]] = [
        ("Django bulk_create (batch_size=1000)", write_bulk_create),
        ("psycopg2 execute_values RETURNING id", write_execute_values),
        ("COPY FROM STDIN (ids from nextval)", write_copy),
    ]
    best: dict[str, float] = {}
    checksums: set[str] = set()
    for _ in range(rounds):
        for label, method in methods:
            objs = [Message(**f) for f in fields]
            with transaction.atomic():
                start = time.perf_counter()
                written = method(objs)
                seconds = time.perf_counter() - start
                if written != rows:
                    raise SystemExit(f"{label}: wrote {written} rows, expected {rows}")
                checksums.add(_rows_checksum(account, prefix))
                transaction.set_rollback(True)
            best[label] = min(best.get(label, math.inf), seconds)
    return [Timing(label, rows, best[label]) for label, _ in methods], len(checksums) == 1


# Output ---------------------------------------------------------------------------------------


def _server_version() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0].split()[0]


def print_report(
    corpus: Sequence[bytes],
    args: argparse.Namespace,
    plain: Timing,
    parse: Timing,
    split: Timing,
    ingest: Timing,
    totals: dict[str, int],
    writes: list[Timing],
    identical: bool,
) -> None:
    copies = math.ceil(args.messages / len(corpus))
    print()
    print("Ingest benchmark")
    print(
        f"  Python {platform.python_version()}, PostgreSQL {_server_version()}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"  corpus      {len(corpus)} messages, {sum(map(len, corpus)):,} bytes ({CORPUS_DIR})")
    print(f"  N           {args.messages:,} messages ({copies} copies of the corpus, fresh ids)")
    print(f"  batch size  {args.batch_size}")
    print()
    header = f"  {'step':<42} {'msgs/s':>10} {'seconds':>9}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for t in (plain, parse, split, ingest):
        print(f"  {t.label:<42} {t.rate:>10,.0f} {t.seconds:>9.1f}")
    print()
    print(
        f"  ingest / plain parse          {ingest.rate / plain.rate:6.3f}"
        f"   (ingest {plain.rate / ingest.rate:.1f}x slower)"
    )
    print(
        f"  parse_message / plain parse   {parse.rate / plain.rate:6.3f}"
        f"   (parse_message {plain.rate / parse.rate:.1f}x slower)"
    )
    print(f"  parse_message_bytes / parse_message  {split.rate / parse.rate:6.3f}")
    print(
        f"  ingest result: created {totals['created']:,}, updated {totals['updated']:,}, "
        f"unchanged {totals['unchanged']:,}, damaged (parse defects) {totals['damaged']:,}"
    )
    print()
    print(
        f"mailstore_message write path: {args.write_rows:,} rows, best of {args.write_rounds},"
        " each attempt rolled back"
    )
    header = f"  {'method':<38} {'rows/s':>10} {'seconds':>9} {'vs bulk_create':>15}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    base = writes[0].rate
    for t in writes:
        print(f"  {t.label:<38} {t.rate:>10,.0f} {t.seconds:>9.2f} {t.rate / base:>14.2f}x")
    print(f"  all methods stored identical rows: {'yes' if identical else 'NO'}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run both sections and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20000, help="N messages (default 20000)")
    parser.add_argument("--batch-size", type=int, default=500, help="ingest batch (default 500)")
    parser.add_argument(
        "--write-rows", type=int, default=5000, help="K rows for the write path (default 5000)"
    )
    parser.add_argument("--write-rounds", type=int, default=3, help="best of (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the bench data afterwards")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.batch_size < 1 or args.write_rows < 1 or args.write_rounds < 1:
        parser.error("counts must be positive")
    if settings.DEBUG:
        print("warning: DEBUG is on; numbers will be worse than production", file=sys.stderr)

    call_command("migrate", verbosity=0)
    corpus = [p.read_bytes() for p in corpus_files()]
    if not corpus:
        raise SystemExit(f"no messages in {CORPUS_DIR}")
    run_tag = f"b{uuid.uuid4().hex[:8]}"
    removed = remove_bench_data()
    print(f"  previous bench data removed in {removed:.1f}s", file=sys.stderr)
    raws = make_messages(corpus, args.messages, run_tag)

    print("  plain parse ...", file=sys.stderr, flush=True)
    plain = time_plain_parse(raws)
    print("  parse_message ...", file=sys.stderr, flush=True)
    parse, kept = time_parse_message(raws, keep=args.write_rows)
    print("  parse_message_bytes (what ingest runs) ...", file=sys.stderr, flush=True)
    split, _ = time_parse_message(
        raws, keep=0, parse=parse_message_bytes, label="messages.mime_stream.parse_message_bytes"
    )
    # Parsing takes minutes: reconnect rather than trust a connection idle all that time.
    connection.close()
    account = bench_account(run_tag)
    print("  ingest ...", file=sys.stderr, flush=True)
    ingest, totals = time_ingest(account, raws, args.batch_size, run_tag)
    print("  write path ...", file=sys.stderr, flush=True)
    writes, identical = time_writes(account, kept, args.write_rows, args.write_rounds, run_tag)

    print_report(corpus, args, plain, parse, split, ingest, totals, writes, identical)
    if not args.keep:
        removed = remove_bench_data()
        print(f"\n  bench data removed in {removed:.1f}s", file=sys.stderr)
    return 0 if totals["created"] == args.messages and identical else 1


if __name__ == "__main__":
    sys.exit(main())
