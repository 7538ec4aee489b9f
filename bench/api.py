#!/usr/bin/env python3
"""API latency benchmark: the client API's hot reads on a big mail store, next to bare SQL.

    make bench-api BENCH_ARGS="--messages 50000 --accounts 10"
    python bench/api.py [--messages 1000000] [--accounts 100] [--rounds 200] [--reseed]
    python bench/api.py --messages 5000000 --accounts 500   # 5x the store, same mailboxes

Use a database of its own (it is created when missing, through the `postgres` database):

    export DATABASE_URL="${DATABASE_URL%/*}/emailplatform_bench"; python bench/api.py

1. Seeding (skipped when the data is already there at the requested size: the marker user
   `bench-api-marker` records it; --reseed forces a new seeding). Per account, a user
   owning one local account (folders INBOX, Archive and Sent), threads of 1 to 8 messages spread
   over three years and interleaved across accounts as mail arrives, subjects and short
   bodies drawn from a Zipf-distributed vocabulary (so full-text search has hits at every
   frequency), locations with per-folder UIDs, ~5% of messages with attachment rows (no
   files) and ~2 change events per message. Users, accounts, folders, tokens and messages
   go in with COPY; threads, locations, attachments and change events with INSERT ... SELECT
   from the messages. All in one transaction, with the secondary indexes, unique and foreign
   key constraints of the big tables dropped during the load and rebuilt from their own
   definitions afterwards; then VACUUM ANALYZE.
2. Latency: for each endpoint, a warm-up, then --rounds requests on random accounts and
   objects through the whole Django stack in-process (django.test.Client with a real
   `Authorization: Token` header: authentication, middleware, DRF, the ORM and JSON rendering
   are all measured), and a hand-written SQL query returning the same data on a bare psycopg2
   cursor, for the same objects; which of the two runs first alternates per sample. The
   results of both are compared (same ids, same order). Search is measured with words of
   medium frequency (about 1% of messages) and with the most frequent ones ("search
   frequent": in 60-100% of messages), each in the default order (newest first) and ranked
   (`order=relevance`, "ranked": every match of the account is ranked; printed, no target).
3. Diagnosis: a few more requests per endpoint with the ORM's queries recorded (how many,
   their time). For an endpoint missing its target or near it (or all, with --explain),
   EXPLAIN (ANALYZE, BUFFERS) of its slowest ORM query. The exit status is 1 when a target
   is missed.
"""

from __future__ import annotations

import argparse
import calendar
import heapq
import hmac
import io
import itertools
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")
# The throttle runs on every request (its cost is measured) but must never answer 429 here.
os.environ.setdefault("THROTTLE_USER", "10000000/minute")

import django  # noqa: E402

django.setup()

import psycopg2  # noqa: E402
import psycopg2.extensions  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from knox.crypto import hash_token  # noqa: E402
from knox.models import AuthToken  # noqa: E402
from knox.settings import CONSTANTS, knox_settings  # noqa: E402

from messages.models import (  # noqa: E402
    Account,
    Attachment,
    ChangeEvent,
    Folder,
    Message,
    MessageLocation,
    Thread,
)

User = get_user_model()
TOKEN_KEY_LENGTH = CONSTANTS.TOKEN_KEY_LENGTH

BENCH_PREFIX = "bench-api-"
MARKER_USERNAME = "bench-api-marker"
# Bump when the generated data changes shape: an older seeding is then not reused.
DATA_VERSION = 3
DATA_SEED = 20261126

SPAN_DAYS = 3 * 365
RECENT_INBOX_DAYS = 90  # received mail this recent stays in INBOX; older, 40% of threads do
CONTACTS_PER_ACCOUNT = 150
THREAD_SIZES = (1, 2, 3, 4, 5, 6, 7, 8)
THREAD_SIZE_WEIGHTS = (45, 20, 12, 8, 6, 4, 3, 2)  # mean ~2.4 messages per thread
# Who writes in a thread: only others (the owner reads), or the owner in turns with a contact.
RECEIVED_ONLY, OWNER_REPLIES, OWNER_STARTS = 0, 1, 2
THREAD_MODES = (RECEIVED_ONLY, OWNER_REPLIES, OWNER_STARTS)
THREAD_MODE_CUM = (55, 88, 100)  # 55%, 33%, 12%: about a fifth of the mail is sent mail
REPLY_GAP_MEAN_SECONDS = 6 * 3600
ATTACHMENT_SHARE = 0.05
HTML_SHARE = 0.7
VOCABULARY_SIZE = 20_000
ZIPF_EXPONENT = 1.05
SENTENCES = 20_000
# Medium-frequency search words: in about this share of messages.
SEARCH_WORD_SHARE = (0.004, 0.025)
SEARCH_WORDS = 8
# Frequent search words (measured apart): the most frequent words, in at least this share.
FREQUENT_WORD_SHARE = 0.10
FREQUENT_WORDS = 4

TARGETS_MS: dict[str, int | None] = {
    "inbox list": 15,
    "thread list": 50,
    "thread detail": 50,
    "message detail": 50,
}
TARGETS_MS |= {"search": 50, "search frequent": 50, "changes page": 50}
TARGETS_MS |= {"search ranked": None, "search frequent ranked": None}  # printed only
NEAR_TARGET = 0.8  # a p95 above this share of its target is reported "near" and explained

T_USER = User._meta.db_table
T_TOKEN = AuthToken._meta.db_table
T_ACCOUNT = Account._meta.db_table
T_FOLDER = Folder._meta.db_table
T_THREAD = Thread._meta.db_table
T_MESSAGE = Message._meta.db_table
T_LOCATION = MessageLocation._meta.db_table
T_ATTACHMENT = Attachment._meta.db_table
T_EVENT = ChangeEvent._meta.db_table
# Loaded with their secondary indexes and constraints dropped, rebuilt afterwards.
BULK_TABLES = (T_THREAD, T_MESSAGE, T_LOCATION, T_ATTACHMENT, T_EVENT)


def log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


# Vocabulary and people ------------------------------------------------------------------------


def split(text: str) -> list[str]:
    return text.split()


# Ranked: the first words are the most frequent (Zipf). No stemming in the 'simple' search
# config, so function words are indexed too, as in real mail.
FUNCTION_WORDS = split(
    """
the to and of a in for is on that with we you it this be as are at have i will from by our
your can if or not all please an was but about so do more has any me my us just there they
would when out also what up new let know get some time here been next like them which one
need see could should their how now other into only its were then than well back after
"""
)

CONTENT_WORDS = split(
    """
meeting project report update team review budget schedule call week today tomorrow monday
tuesday wednesday thursday friday plan client customer order invoice payment contract proposal
draft document file attached summary notes agenda deadline quarter revenue sales marketing
design product release launch feature issue bug fix test deploy server database account access
password security policy office travel flight hotel booking trip conference event workshop
training session presentation slides feedback question answer request approval support service
delivery shipment package tracking price quote estimate cost expense receipt refund discount
offer subscription newsletter webinar survey results data analysis metrics dashboard goals
strategy roadmap milestone sprint backlog ticket status progress risk vendor supplier partner
contractor candidate interview hiring onboarding benefits payroll holiday vacation lunch dinner
coffee birthday party celebration morning afternoon evening weekend month year january february
march april may june july august september october november december board investor legal
compliance audit tax finance accounting forecast target growth pipeline lead prospect demo
trial license renewal upgrade migration backup outage incident maintenance downtime network
laptop phone printer desk building parking kitchen floor room calendar invite reschedule
confirm cancel attend join share link folder spreadsheet chart table figure version change
comment edit sign signature form application registration certificate course lesson class
student teacher school university research paper article blog post video podcast interview
press media campaign brand logo website page content copy translation language english
french german spanish chinese japanese market region country city london paris berlin york
tokyo sydney toronto madrid rome amsterdam dublin vienna warehouse inventory stock supply
logistics transport truck container port customs import export manufacturing factory quality
inspection sample prototype engineering hardware software firmware mobile android desktop cloud
storage hosting domain email inbox spam filter sync calendar contact address shipping billing
subscription membership renewal premium basic plan tier upgrade credit debit card bank
transfer wire deposit balance statement loan mortgage insurance claim policy coverage premium
doctor appointment clinic health dental vision pharmacy prescription fitness gym yoga running
marathon football soccer tennis golf basketball match game ticket concert theater museum
exhibition gallery festival movie book library reading writing recipe garden kids family
school homework parents teacher volunteer charity donation fundraiser community neighborhood
apartment lease rent landlord repair plumber electrician renovation furniture delivery moving
insurance car rental bike train bus airport taxi luggage passport visa embassy reservation
restaurant menu wine cheese chocolate bakery market grocery organic vegan pizza sushi salad
weather rain snow storm sunny forecast spring summer autumn winter beach mountain lake river
island camping hiking skiing sailing photo camera album memories anniversary wedding baby
congratulations thanks welcome reminder urgent important asap followup recap minutes action
items owner assignee priority blocker dependency scope requirement specification architecture
interface endpoint token cache queue worker cluster container kubernetes terraform pipeline
build artifact repository branch merge commit pull review approval rollout rollback canary
latency throughput capacity scaling performance benchmark profiling memory disk cpu index
query schema table column migration replica failover encryption certificate firewall vpn
phishing alert monitoring logging tracing oncall pager escalation postmortem retro demo
standup kickoff offsite allhands townhall lunchandlearn hackathon retreat promotion salary
bonus equity review appraisal objectives keyresults headcount reorg transition handover
"""
)

FIRST_NAMES = split(
    """
Anna Ben Carla David Elena Frank Grace Hugo Irene Jack Karen Leo Maria Nina Oscar Paula Quinn
Rosa Sam Tara Umar Vera Will Xena Yusuf Zoe Adam Bianca Chris Diana Ethan Fiona George Hannah
Ivan Julia Kevin Laura Marco Nora Oliver Petra Rahul Sofia Tom Ursula Victor Wendy Yara Zack
Alice Bruno Chloe Daniel Emma Felix Gina Henry Isla James Kira Lucas Mia Noah Olga Pedro Ruth
Simon Tina Uma Viktor Wanda Aaron Bella Carlos Dora Emil Freya Gustav Helen Igor Jasmine
"""
)

LAST_NAMES = split(
    """
Smith Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Wilson Anderson Thomas
Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis Robinson
Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall
Rivera Campbell Mitchell Carter Roberts Mueller Schmidt Schneider Fischer Weber Meyer Wagner
Becker Rossi Russo Ferrari Bianchi Romano Dubois Martin Bernard Moreau Laurent Simon Michel
Kowalski Nowak Novak Horvat Jensen Hansen Larsen Berg Lindqvist Virtanen Tanaka Suzuki Sato
"""
)

DOMAINS = split(
    """
northwind.example contoso.example fabrikam.example globex.example initech.example
umbrella.example acme.example hooli.example piedpiper.example vandelay.example wayne.example
stark.example tyrell.example cyberdyne.example soylent.example oscorp.example wonka.example
dundermifflin.example aperture.example blackmesa.example monarch.example sterling.example
bluth.example pawnee.example gekko.example massive.example prestige.example mail.example
post.example webmail.example inbox.example university.example school.example clinic.example
bank.example airline.example hotel.example shop.example news.example city.example
"""
)

SUBJECT_TEMPLATES = (
    "{W} {w} for {month}",
    "Question about the {w} {w}",
    "{W} {w} update",
    "Meeting: {w} {w} on {day}",
    "Invoice {num} for {w} {w}",
    "Your {w} order {num} has shipped",
    "{W} review: {w} and {w}",
    "Weekly {w} digest",
    "Reminder: {w} {w} due {day}",
    "{W} {w} {w}",
    "Notes from the {w} {w}",
    "Can we move the {w} to {day}?",
    "{W} {w} ({month})",
    "Draft {w} {w} attached",
    "FYI: {w} {w}",
)
GREETINGS = ("Hi {name},", "Hello {name},", "Dear {name},", "Hey {name},", "{name},", "Hi all,")
SIGN_OFFS = ("Thanks,", "Best,", "Regards,", "Cheers,", "Best regards,", "Thank you,", "See you,")
MONTHS = list(calendar.month_name)[1:]
DAYS = list(calendar.day_name)[:5]
ATTACHMENT_FILES = (
    ("report.pdf", "application/pdf"),
    ("invoice.pdf", "application/pdf"),
    ("photo.jpg", "image/jpeg"),
    ("slides.pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
    ("budget.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("notes.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("scan.png", "image/png"),
    ("contract.pdf", "application/pdf"),
    ("archive.zip", "application/zip"),
    ("calendar.ics", "text/calendar"),
)


@dataclass(frozen=True)
class Person:
    name: str
    address: str
    first: str
    json: str  # {"name": ..., "address": ...}, ready to go in a JSON list


def person(first: str, last: str, address: str) -> Person:
    name = f"{first} {last}"
    return Person(name, address, first, json.dumps({"name": name, "address": address}))


class Corpus:
    """Deterministic text material: vocabulary, sentences, subjects, people."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        real = list(dict.fromkeys(FUNCTION_WORDS + CONTENT_WORDS))
        words = real + self._pseudo_words(rng, set(real), VOCABULARY_SIZE - len(real))
        self.words = words
        weights = [1 / rank**ZIPF_EXPONENT for rank in range(1, len(words) + 1)]
        self.cum = list(itertools.accumulate(weights))
        # Subjects: real content words only, the same Zipf ranks as in bodies.
        n_function = len(dict.fromkeys(FUNCTION_WORDS))
        self.subject_words = real[n_function:]
        self.subject_cum = list(itertools.accumulate(weights[n_function : len(real)]))
        self.sentences = [self._sentence(rng) for _ in range(SENTENCES)]
        self.people = [
            person(f, last, f"{f.lower()}.{last.lower()}@{rng.choice(DOMAINS)}")
            for f, last in zip(
                rng.choices(FIRST_NAMES, k=5000), rng.choices(LAST_NAMES, k=5000), strict=True
            )
        ]

    @staticmethod
    def _pseudo_words(rng: random.Random, taken: set[str], count: int) -> list[str]:
        onsets = split("b br c ch d dr f fl g gr h j k kl l m n p pr r s st t tr v w z")
        vowels = split("a e i o u ai ea io ou")
        codas = ["", "", "n", "r", "l", "s", "t", "m", "x", "nd", "rk"]
        out: list[str] = []
        seen = set(taken)
        while len(out) < count:
            syllables = rng.choice((2, 2, 3))
            word = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(syllables))
            word += rng.choice(codas)
            if word not in seen:
                seen.add(word)
                out.append(word)
        return out

    def _sentence(self, rng: random.Random) -> str:
        words = rng.choices(self.words, cum_weights=self.cum, k=rng.randint(5, 14))
        words[0] = words[0].capitalize()
        return " ".join(words) + rng.choice("....?!")

    def subject(self, rng: random.Random) -> str:
        template = rng.choice(SUBJECT_TEMPLATES)
        picks = iter(rng.choices(self.subject_words, cum_weights=self.subject_cum, k=3))
        text = template.replace("{W}", next(picks).capitalize())
        while "{w}" in text:
            text = text.replace("{w}", next(picks, "plan"), 1)
        return text.format(
            month=rng.choice(MONTHS), day=rng.choice(DAYS), num=rng.randint(10000, 99999)
        )

    def search_candidates(self) -> list[tuple[str, float]]:
        """Real words with their expected share of messages, nearest to 1% first."""
        per_message = 4.0  # sentences per body, on average
        counts: dict[str, int] = {}
        for sentence in self.sentences:
            for word in set(sentence.rstrip(".?!").lower().split()):
                counts[word] = counts.get(word, 0) + 1
        content = dict.fromkeys(CONTENT_WORDS)
        expected = [(w, per_message * counts.get(w, 0) / len(self.sentences)) for w in content]
        low, high = SEARCH_WORD_SHARE
        fitting = [(w, share) for w, share in expected if low <= share <= high]
        return sorted(fitting, key=lambda item: abs(item[1] - 0.01))

    def frequent_candidates(self) -> list[str]:
        """Real words, function words included, most frequent first (Zipf rank order)."""
        return list(dict.fromkeys(FUNCTION_WORDS + CONTENT_WORDS))


# COPY helpers ---------------------------------------------------------------------------------


def esc(text: str) -> str:
    """A value for COPY's text format (str.replace: many times faster than str.translate)."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class LineStream(io.TextIOBase):
    """A file psycopg2's COPY reads from: the lines are generated as it asks for them."""

    def __init__(self, lines: Iterable[str], batch: int = 2000) -> None:
        self._lines = iter(lines)
        self._batch = batch

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        return "".join(itertools.islice(self._lines, self._batch))


def copy_rows(cursor: Any, table: str, columns: Sequence[str], lines: Iterable[str]) -> None:
    names = ", ".join(connection.ops.quote_name(c) for c in columns)
    cursor.copy_expert(f"COPY {table} ({names}) FROM STDIN", LineStream(lines), size=1 << 20)


def reserve_ids(cursor: Any, table: str, count: int) -> int:
    """The first of `count` consecutive ids taken from the table's sequence."""
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
    sequence = cursor.fetchone()[0]
    cursor.execute("SELECT nextval(%s)", [sequence])
    first = cursor.fetchone()[0]
    cursor.execute("SELECT setval(%s, %s)", [sequence, first + count - 1])
    return first


# Seeding --------------------------------------------------------------------------------------


@dataclass
class Owner:
    user_id: int
    account_id: int
    email: str
    person: Person
    contacts: list[Person]
    contact_cum: list[float]


@dataclass
class AccountPlan:
    """An account's mail: one int per message (time, thread, position), in time order."""

    entries: list[int]
    # size, counterpart contact, mode (RECEIVED_ONLY, OWNER_REPLIES, OWNER_STARTS), third
    # participant (-1: none), subject
    threads: list[tuple[int, int, int, int, str]]
    thread_ids: list[int] = field(default_factory=list)


def plan_account(
    rng: random.Random, corpus: Corpus, owner: Owner, count: int, now_ts: int
) -> AccountPlan:
    span = SPAN_DAYS * 86400
    entries: list[int] = []
    threads: list[tuple[int, int, int, int, str]] = []
    size_cum = list(itertools.accumulate(THREAD_SIZE_WEIGHTS))
    left = count
    while left > 0:
        size = min(rng.choices(THREAD_SIZES, cum_weights=size_cum)[0], left)
        gaps = [60 + int(rng.expovariate(1 / REPLY_GAP_MEAN_SECONDS)) for _ in range(size - 1)]
        duration = sum(gaps)
        ts = now_ts - duration - int(rng.random() * max(0, span - duration))
        t = len(threads)
        entries.append(ts << 27 | t << 3)
        for pos, gap in enumerate(gaps, 1):
            ts += gap
            entries.append(ts << 27 | t << 3 | pos)
        contacts = range(len(owner.contacts))
        contact, third = rng.choices(contacts, cum_weights=owner.contact_cum, k=2)
        mode = rng.choices(THREAD_MODES, cum_weights=THREAD_MODE_CUM)[0]
        with_third = rng.random() < (0.5 if mode == RECEIVED_ONLY else 0.2)
        threads.append((size, contact, mode, third if with_third else -1, ""))
        left -= size
    entries.sort()
    # Subjects last, so the message times above do not depend on the subject generator.
    threads = [(*t[:4], corpus.subject(rng)) for t in threads]
    return AccountPlan(entries, threads, [0] * len(threads))


MESSAGE_COLUMNS = split(
    "account_id thread_id provider_id message_id_header in_reply_to references subject "
    "from_name from_address to cc bcc reply_to date internal_date sort_date snippet body_text "
    "body_html size is_read is_flagged is_answered is_draft has_attachments defects created_at "
    "updated_at server_ids"
)


def message_lines(
    corpus: Corpus,
    owners: list[Owner],
    plans: list[AccountPlan],
    first_thread_id: int,
    now_ts: int,
    rng: random.Random,
    total: int,
) -> Iterator[str]:
    """COPY lines of every message, all accounts merged in time order (as mail arrives)."""
    streams = [zip(p.entries, itertools.repeat(k)) for k, p in enumerate(plans)]
    next_thread = first_thread_id
    started = time.perf_counter()
    report_every = max(1, total // 10)
    sentences = corpus.sentences
    for done, (enc, k) in enumerate(heapq.merge(*streams), 1):
        ts, t, pos = enc >> 27, (enc >> 3) & 0xFFFFFF, enc & 7
        owner, plan = owners[k], plans[k]
        size, contact, mode, third, subject = plan.threads[t]
        if pos == 0:
            plan.thread_ids[t] = next_thread
            next_thread += 1
        if mode == RECEIVED_ONLY:
            # Notifications, lists: the contact (and a third person, taking turns) write.
            from_owner = answered = False
            sender = owner.contacts[third if third >= 0 and pos % 2 else contact]
            to = owner.person
        else:
            # A conversation: the owner and the contact take turns, a third person now and then.
            owner_first = mode == OWNER_STARTS
            from_owner = (pos % 2 == 0) == owner_first
            if from_owner:
                sender, to = owner.person, owner.contacts[contact]
            elif third >= 0 and pos % 3 == 2:
                sender, to = owner.contacts[third], owner.person
            else:
                sender, to = owner.contacts[contact], owner.person
            answered = not from_owner and pos + 1 < size and ((pos + 1) % 2 == 0) == owner_first
        cc = owner.contacts[third] if third >= 0 and sender is not owner.contacts[third] else None

        text = " ".join(rng.choices(sentences, k=rng.randint(2, 6)))
        greeting = rng.choice(GREETINGS).format(name=to.first)
        sign_off = rng.choice(SIGN_OFFS)
        body = f"{greeting}\n\n{text}\n\n{sign_off}\n{sender.first}"
        if rng.random() < HTML_SHARE:
            pixel = (
                f'<img src="https://news.example/o/{t}.gif" width="1" height="1">'
                if rng.random() < 0.1
                else ""
            )
            html = (
                f"<html><body><div><p>{greeting}</p><p>{text}</p>"
                f"<p>{sign_off}<br>{sender.first}</p>{pixel}</div></body></html>"
            )
        else:
            html = ""
        snippet = f"{greeting} {text}"[:200]
        msgid = f"<t{t}.{pos}.a{owner.account_id}@mail.bench.example>"
        references = [f"<t{t}.{i}.a{owner.account_id}@mail.bench.example>" for i in range(pos)]
        age = now_ts - ts
        is_read = from_owner or rng.random() < (0.97 if age > 14 * 86400 else 0.5)
        date = iso(ts)
        created = iso(ts + 30)
        yield (
            "\t".join(
                (
                    str(owner.account_id),
                    str(plan.thread_ids[t]),
                    f"bench-{t}.{pos}",
                    msgid,
                    references[-1] if references else "",
                    json.dumps(references),
                    esc(f"Re: {subject}" if pos else subject),
                    sender.name,
                    sender.address,
                    f"[{to.json}]",
                    f"[{cc.json}]" if cc else "[]",
                    "[]",
                    "[]",
                    date,
                    iso(ts + 7),
                    date,
                    esc(snippet),
                    esc(body),
                    esc(html),
                    str(len(body) + len(html) + 900),
                    "t" if is_read else "f",
                    "t" if rng.random() < 0.03 else "f",
                    "t" if answered else "f",
                    "f",
                    "t" if rng.random() < ATTACHMENT_SHARE else "f",
                    "[]",
                    created,
                    created,
                    "{}",  # server_ids: none (a local account)
                )
            )
            + "\n"
        )
        if done % report_every == 0:
            log(f"messages {done / total:4.0%}  {time.perf_counter() - started:7.1f}s")


def defer_schema(cursor: Any, tables: Sequence[str]) -> list[str]:
    """Drop the secondary indexes, unique and foreign key constraints of `tables`; return the
    statements that restore them (indexes and unique constraints first, foreign keys last)."""
    quote = connection.ops.quote_name
    cursor.execute(
        """
        SELECT c.conrelid::regclass::text, c.conname, c.contype, pg_get_constraintdef(c.oid)
          FROM pg_constraint c
         WHERE c.conrelid = ANY(%s::regclass[]) AND c.contype IN ('f', 'u')
         ORDER BY c.contype, c.conname
        """,
        [list(tables)],
    )
    constraints = cursor.fetchall()
    cursor.execute(
        """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
          FROM pg_index i
         WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                            WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
         ORDER BY 1
        """,
        [list(tables)],
    )
    indexes = cursor.fetchall()
    restore = [definition for _, definition in indexes]
    foreign = []
    for table, name, kind, definition in constraints:
        cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {quote(name)}")
        statement = f"ALTER TABLE {table} ADD CONSTRAINT {quote(name)} {definition}"
        (foreign if kind == "f" else restore).append(statement)
    for name, _ in indexes:
        cursor.execute(f"DROP INDEX {name}")
    return restore + foreign


def bench_user_ids(cursor: Any) -> list[int]:
    cursor.execute(f"SELECT id FROM {T_USER} WHERE username LIKE %s", [BENCH_PREFIX + "%"])
    return [row[0] for row in cursor.fetchall()]


def remove_bench_data(cursor: Any) -> str:
    """Delete the bench users and all they own. When the database holds nothing else, the mail
    tables are truncated (seconds); otherwise the bench rows are deleted (slower)."""
    users = bench_user_ids(cursor)
    if not users:
        return "nothing to remove"
    cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {T_ACCOUNT} WHERE owner_id <> ALL(%s))", [users])
    others_have_mail = cursor.fetchone()[0]
    cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {T_EVENT} WHERE owner_id <> ALL(%s))", [users])
    others_have_events = cursor.fetchone()[0]
    if others_have_mail:
        cursor.execute(f"SELECT id FROM {T_ACCOUNT} WHERE owner_id = ANY(%s)", [users])
        accounts = [row[0] for row in cursor.fetchall()]
        by_message = f"message_id IN (SELECT id FROM {T_MESSAGE} WHERE account_id = ANY(%s))"
        for table, condition in (
            (T_ATTACHMENT, by_message),
            (T_LOCATION, by_message),
            ("mailstore_rawmessage", by_message),
            ("mailstore_threadreference", "account_id = ANY(%s)"),
            (T_MESSAGE, "account_id = ANY(%s)"),
            (T_THREAD, "account_id = ANY(%s)"),
        ):
            cursor.execute(f"DELETE FROM {table} WHERE {condition}", [accounts])
        how = "deleted (the database holds other mail too)"
    else:
        cursor.execute(f"TRUNCATE {T_ACCOUNT} CASCADE")
        how = "truncated"
    if others_have_events:
        cursor.execute(f"DELETE FROM {T_EVENT} WHERE owner_id = ANY(%s)", [users])
    else:
        cursor.execute(f"TRUNCATE {T_EVENT}")
    # What is left (tokens, accounts and folders if not truncated) is small: the ORM cascades.
    User.objects.filter(pk__in=users).delete()
    # Run the deferred foreign key checks of those deletes now: tables with pending trigger
    # events cannot be altered (defer_schema comes next).
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    cursor.execute("SET CONSTRAINTS ALL DEFERRED")
    return how


def marker_text(messages: int, accounts: int) -> str:
    return f"v{DATA_VERSION} messages={messages} accounts={accounts}"


def existing_seed(messages: int, accounts: int) -> tuple[bool, str]:
    marker = User.objects.filter(username=MARKER_USERNAME).first()
    if marker is None:
        return False, ""
    return marker.last_name == marker_text(messages, accounts), marker.first_name


def seed(args: argparse.Namespace, corpus: Corpus) -> dict[str, float]:
    """Seed the bench data in one transaction; returns seconds per step."""
    steps: dict[str, float] = {}
    rng = random.Random(DATA_SEED)
    now = datetime.now(UTC).replace(microsecond=0)
    now_ts = int(now.timestamp())
    joined = now - timedelta(days=SPAN_DAYS + 1)
    per_account = [
        args.messages // args.accounts + (1 if i < args.messages % args.accounts else 0)
        for i in range(args.accounts)
    ]
    with transaction.atomic():
        connection.ensure_connection()
        cursor = connection.connection.cursor()
        cursor.execute("SET LOCAL maintenance_work_mem = '1GB'")
        cursor.execute("SET LOCAL work_mem = '256MB'")

        start = time.perf_counter()
        log(f"previous bench data: {remove_bench_data(cursor)}")
        steps["remove previous bench data"] = time.perf_counter() - start

        start = time.perf_counter()
        restore = defer_schema(cursor, BULK_TABLES)
        steps["drop indexes and constraints"] = time.perf_counter() - start

        # Users, tokens, accounts, folders (COPY, ids reserved first).
        start = time.perf_counter()
        n = args.accounts
        first_user = reserve_ids(cursor, T_USER, n)
        first_account = reserve_ids(cursor, T_ACCOUNT, n)
        first_folder = reserve_ids(cursor, T_FOLDER, 3 * n)
        owners: list[Owner] = []
        contact_weights = list(
            itertools.accumulate(1 / r for r in range(1, CONTACTS_PER_ACCOUNT + 1))
        )
        user_lines, token_lines, account_lines, folder_lines = [], [], [], []
        for i in range(n):
            first, last = FIRST_NAMES[i % len(FIRST_NAMES)], LAST_NAMES[(i * 7) % len(LAST_NAMES)]
            email = f"{first.lower()}.{last.lower()}.{i + 1}@bench.example"
            user_id, account_id = first_user + i, first_account + i
            owners.append(
                Owner(
                    user_id,
                    account_id,
                    email,
                    person(first, last, email),
                    rng.sample(corpus.people, CONTACTS_PER_ACCOUNT),
                    contact_weights,
                )
            )
            user_lines.append(
                f"{user_id}\t!\tf\t{BENCH_PREFIX}{i + 1:06d}\t{first}\t{last}\t{email}"
                f"\tf\tt\t{joined.isoformat()}\n"
            )
            token = bench_token(user_id)
            token_lines.append(
                f"{hash_token(token)}\t{token[:TOKEN_KEY_LENGTH]}\t{user_id}"
                f"\t{now.isoformat()}\t{(now + knox_settings.TOKEN_TTL).isoformat()}\n"
            )
            account_lines.append(
                f"{account_id}\t{user_id}\tlocal\t{email}\t{first} {last}\tactive\t\t{{}}"
                f"\t\\\\x\t{joined.isoformat()}\t{now.isoformat()}\t{now.isoformat()}\t0\n"
            )
            for j, (name, role) in enumerate((("INBOX", "inbox"), ("Archive", "archive"))):
                folder_lines.append(
                    f"{first_folder + 3 * i + j}\t{account_id}\t{name}\t{name}\t{role}\t/\t1"
                    f"\t{{}}\t{joined.isoformat()}\n"
                )
            folder_lines.append(
                f"{first_folder + 3 * i + 2}\t{account_id}\tSent\tSent\tsent\t/\t1"
                f"\t{{}}\t{joined.isoformat()}\n"
            )
        copy_rows(
            cursor,
            T_USER,
            split(
                "id password is_superuser username first_name last_name email is_staff "
                "is_active date_joined"
            ),
            user_lines,
        )
        copy_rows(
            cursor, T_TOKEN, ["digest", "token_key", "user_id", "created", "expiry"], token_lines
        )
        copy_rows(
            cursor,
            T_ACCOUNT,
            split(
                "id owner_id provider email_address display_name status last_error "
                "sync_settings credentials_encrypted created_at updated_at last_sync_at "
                "auth_failures"
            ),
            account_lines,
        )
        copy_rows(
            cursor,
            T_FOLDER,
            split("id account_id name display_name role delimiter uidvalidity sync_state")
            + ["created_at"],
            folder_lines,
        )
        steps["users, tokens, accounts, folders (COPY)"] = time.perf_counter() - start

        # Messages: planned per account, generated lazily, merged in time order, COPY'd.
        start = time.perf_counter()
        plans = [
            plan_account(rng, corpus, owner, count, now_ts)
            for owner, count in zip(owners, per_account, strict=True)
        ]
        thread_count = sum(len(p.threads) for p in plans)
        first_thread = reserve_ids(cursor, T_THREAD, thread_count)
        first_message = reserve_ids(cursor, T_MESSAGE, args.messages)
        log(f"planned {args.messages:,} messages in {thread_count:,} threads")
        lines = message_lines(corpus, owners, plans, first_thread, now_ts, rng, args.messages)
        numbered = (f"{first_message + i}\t{line}" for i, line in enumerate(lines))
        copy_rows(cursor, T_MESSAGE, ["id", *MESSAGE_COLUMNS], numbered)
        steps["messages (generate + COPY)"] = time.perf_counter() - start
        last_message = first_message + args.messages - 1
        ids = {"first": first_message, "last": last_message}

        start = time.perf_counter()
        cursor.execute(
            f"""
            INSERT INTO {T_THREAD}
                   (id, account_id, provider_thread_id, subject, snippet, message_count,
                    last_message_at)
            SELECT f.thread_id, f.account_id, NULL, f.subject, l.snippet, l.cnt, l.sort_date
              FROM (SELECT DISTINCT ON (thread_id) thread_id, account_id, subject
                      FROM {T_MESSAGE} WHERE id BETWEEN %(first)s AND %(last)s
                     ORDER BY thread_id, sort_date, id) f
              JOIN (SELECT DISTINCT ON (thread_id) thread_id, snippet, sort_date,
                           count(*) OVER (PARTITION BY thread_id) AS cnt
                      FROM {T_MESSAGE} WHERE id BETWEEN %(first)s AND %(last)s
                     ORDER BY thread_id, sort_date DESC, id DESC) l USING (thread_id)
            """,
            ids,
        )
        steps["threads (INSERT ... SELECT)"] = time.perf_counter() - start

        start = time.perf_counter()
        cursor.execute(
            f"""
            INSERT INTO {T_LOCATION} (message_id, folder_id, uid, sort_date)
            SELECT m.id, f.id,
                   row_number() OVER (PARTITION BY f.id ORDER BY m.sort_date, m.id),
                   m.sort_date
              FROM {T_MESSAGE} m
              JOIN {T_ACCOUNT} a ON a.id = m.account_id
              JOIN {T_FOLDER} f ON f.account_id = m.account_id AND f.role =
                   CASE WHEN m.from_address = a.email_address THEN 'sent'
                        WHEN m.sort_date >= %(recent)s OR mod(m.thread_id * 7919, 10) < 4
                        THEN 'inbox'
                        ELSE 'archive' END
             WHERE m.id BETWEEN %(first)s AND %(last)s
            """,
            {**ids, "recent": now - timedelta(days=RECENT_INBOX_DAYS)},
        )
        cursor.execute(
            f"""
            UPDATE {T_FOLDER} f SET uidnext = x.top + 1
              FROM (SELECT folder_id, max(uid) AS top FROM {T_LOCATION}
                     WHERE folder_id BETWEEN %s AND %s GROUP BY folder_id) x
             WHERE f.id = x.folder_id
            """,
            [first_folder, first_folder + 3 * n - 1],
        )
        steps["locations (INSERT ... SELECT)"] = time.perf_counter() - start

        start = time.perf_counter()
        cursor.execute(
            f"""
            INSERT INTO {T_ATTACHMENT}
                   (message_id, part_path, filename, content_type, size, content_id,
                    is_inline, sha256, file)
            SELECT m.id, (n + 1)::text,
                   (%(names)s::text[])[1 + mod(m.id + n, %(count)s)],
                   (%(types)s::text[])[1 + mod(m.id + n, %(count)s)],
                   2048 + mod(m.id * 7919 + n * 104729, 4000000), '', false,
                   md5(m.id || ':' || n) || md5(n || ':' || m.id), ''
              FROM {T_MESSAGE} m
             CROSS JOIN LATERAL generate_series(1, 1 + (mod(m.id, 3) = 0)::int) AS n
             WHERE m.has_attachments AND m.id BETWEEN %(first)s AND %(last)s
            """,
            {
                **ids,
                "names": [name for name, _ in ATTACHMENT_FILES],
                "types": [kind for _, kind in ATTACHMENT_FILES],
                "count": len(ATTACHMENT_FILES),
            },
        )
        steps["attachments (INSERT ... SELECT)"] = time.perf_counter() - start

        start = time.perf_counter()
        cursor.execute(
            f"""
            INSERT INTO {T_EVENT} (owner_id, account_id, object_type, object_id, kind, created_at)
            SELECT owner_id, account_id, object_type, object_id, kind, created_at FROM (
                SELECT a.owner_id, a.id AS account_id, 'account' AS object_type,
                       a.id AS object_id, 'created' AS kind, a.created_at, 0 AS step
                  FROM {T_ACCOUNT} a WHERE a.id BETWEEN %(first_account)s AND %(last_account)s
                UNION ALL
                SELECT a.owner_id, a.id, 'folder', f.id, 'created', a.created_at, 1
                  FROM {T_FOLDER} f JOIN {T_ACCOUNT} a ON a.id = f.account_id
                 WHERE a.id BETWEEN %(first_account)s AND %(last_account)s
                UNION ALL
                SELECT a.owner_id, a.id, 'message', m.id, 'created', m.created_at, 2
                  FROM {T_MESSAGE} m JOIN {T_ACCOUNT} a ON a.id = m.account_id
                 WHERE m.id BETWEEN %(first)s AND %(last)s
                UNION ALL
                SELECT a.owner_id, a.id, 'thread', m.thread_id,
                       CASE WHEN m.in_reply_to = '' THEN 'created' ELSE 'updated' END,
                       m.created_at, 3
                  FROM {T_MESSAGE} m JOIN {T_ACCOUNT} a ON a.id = m.account_id
                 WHERE m.id BETWEEN %(first)s AND %(last)s
                UNION ALL
                SELECT a.owner_id, a.id, 'message', m.id, 'updated',
                       LEAST(%(now)s,
                             m.created_at + make_interval(hours => 1 + mod(m.id, 48)::int)),
                       4
                  FROM {T_MESSAGE} m JOIN {T_ACCOUNT} a ON a.id = m.account_id
                 WHERE m.id BETWEEN %(first)s AND %(last)s
                   AND m.is_read AND m.from_address <> a.email_address AND mod(m.id, 10) = 0
            ) e
            ORDER BY created_at, step, object_id
            """,
            {
                **ids,
                "now": now,
                "first_account": first_account,
                "last_account": first_account + n - 1,
            },
        )
        steps["change events (INSERT ... SELECT)"] = time.perf_counter() - start

        start = time.perf_counter()
        for statement in restore:
            began = time.perf_counter()
            cursor.execute(statement)
            log(f"{time.perf_counter() - began:6.1f}s  {statement[:110]}")
        steps["rebuild indexes and constraints"] = time.perf_counter() - start

        marker = User(username=MARKER_USERNAME, last_name=marker_text(args.messages, n))
        marker.set_unusable_password()
        marker.save()
    start = time.perf_counter()
    with connection.cursor() as vacuum:
        for table in (T_USER, T_TOKEN, T_ACCOUNT, T_FOLDER, *BULK_TABLES):
            vacuum.execute(f"VACUUM (ANALYZE) {table}")
    steps["VACUUM ANALYZE"] = time.perf_counter() - start
    total = sum(steps.values())
    User.objects.filter(username=MARKER_USERNAME).update(
        first_name=f"seeded in {total:.0f}s on {now:%Y-%m-%d}"
    )
    return steps


# Measuring ------------------------------------------------------------------------------------


@dataclass
class BenchUser:
    user_id: int
    token: str
    account_id: int
    inbox_id: int


@dataclass
class Case:
    """One sample: an API request and the SQL returning the same data."""

    path: str
    token: str
    sql: list[tuple[str, list[Any]]]


@dataclass
class Endpoint:
    name: str
    make: Callable[[random.Random], Case]
    api_ids: Callable[[Any], list[int]]  # ids in the API answer, in order
    sql_ids: Callable[[list[list[tuple]]], list[int]]  # the same from the SQL results


@dataclass
class Result:
    api: list[float] = field(default_factory=list)
    sql: list[float] = field(default_factory=list)
    mismatches: int = 0
    compared: int = 0
    first_mismatch: str = ""


# The API's default page sizes; it asks for one row more, to know if there is a next page.
PAGE = 50
CHANGES_PAGE = 100
SUMMARY_COLUMNS = """
    m.id, m.account_id, m.thread_id, m.subject, m.from_name, m.from_address, m."to", m.cc,
    m.date, m.sort_date, m.snippet, m.is_read, m.is_flagged, m.is_answered, m.is_draft,
    m.has_attachments, m.size
"""
FOLDER_NAMES = f"""
    ARRAY(SELECT DISTINCT f.name FROM {T_LOCATION} l JOIN {T_FOLDER} f ON f.id = l.folder_id
           WHERE l.message_id = m.id ORDER BY f.name) AS folders
"""
VISIBLE_ACCOUNTS = f"SELECT id FROM {T_ACCOUNT} WHERE owner_id = %s AND status <> 'deleting'"

# Driven by the folder's locations in their own date order (location_folder_newest_page), scoped
# through the folder (a folder's locations hold only its account's messages), a message held
# twice in the folder (two UIDs) once. Scoping on m.account_id instead makes PostgreSQL take
# "in this folder" and "of this user's account" as independent (1 in 100 accounts): it then
# expects a few dozen rows, reads the whole folder and sorts it (see the report).
SQL_INBOX = f"""
    SELECT DISTINCT ON (loc.sort_date, loc.message_id) {SUMMARY_COLUMNS}, {FOLDER_NAMES}
      FROM {T_LOCATION} loc JOIN {T_MESSAGE} m ON m.id = loc.message_id
     WHERE loc.folder_id = %s
       AND loc.folder_id IN (SELECT id FROM {T_FOLDER} WHERE account_id IN ({VISIBLE_ACCOUNTS}))
     ORDER BY loc.sort_date DESC, loc.message_id DESC
     LIMIT 51
"""
THREAD_COLUMNS = f"""
    t.id, t.account_id, t.subject, t.snippet, t.message_count, t.last_message_at,
    (SELECT count(*) FROM {T_MESSAGE} u WHERE u.thread_id = t.id AND NOT u.is_read),
    ARRAY(SELECT json_build_object('name', s.from_name, 'address', s.from_address)
            FROM {T_MESSAGE} s WHERE s.thread_id = t.id ORDER BY s.sort_date, s.id)
"""
SQL_THREAD = f"""
    SELECT {THREAD_COLUMNS}
      FROM {T_THREAD} t
     WHERE t.id = %s AND t.last_message_at IS NOT NULL AND t.account_id IN ({VISIBLE_ACCOUNTS})
"""
SQL_THREAD_LIST = f"""
    SELECT {THREAD_COLUMNS}
      FROM {T_THREAD} t
     WHERE t.last_message_at IS NOT NULL AND t.account_id IN ({VISIBLE_ACCOUNTS})
     ORDER BY t.last_message_at DESC, t.id DESC
     LIMIT 51
"""
SQL_THREAD_MESSAGES = f"""
    SELECT {SUMMARY_COLUMNS}, {FOLDER_NAMES}
      FROM {T_MESSAGE} m WHERE m.thread_id = %s ORDER BY m.sort_date, m.id
"""
SQL_MESSAGE = f"""
    SELECT {SUMMARY_COLUMNS}, m.bcc, m.reply_to, m.message_id_header, m.in_reply_to,
           m."references", m.internal_date, m.body_text, m.body_html, m.defects, {FOLDER_NAMES},
           (SELECT json_agg(json_build_object('id', x.id, 'filename', x.filename,
                                              'content_type', x.content_type, 'size', x.size,
                                              'content_id', x.content_id,
                                              'is_inline', x.is_inline, 'stored', x.file <> '')
                            ORDER BY x.id)
              FROM {T_ATTACHMENT} x WHERE x.message_id = m.id) AS attachments
      FROM {T_MESSAGE} m
     WHERE m.id = %s AND m.account_id IN ({VISIBLE_ACCOUNTS})
"""
SQL_SEARCH = f"""
    SELECT {SUMMARY_COLUMNS}, {FOLDER_NAMES}
      FROM {T_MESSAGE} m, websearch_to_tsquery('simple', %s) q
     WHERE m.search_vector @@ q AND m.account_id = %s::bigint
       AND m.account_id IN ({VISIBLE_ACCOUNTS})
     ORDER BY m.sort_date DESC, m.id DESC
     LIMIT 51
"""
SQL_SEARCH_RANKED = f"""
    SELECT {SUMMARY_COLUMNS}, {FOLDER_NAMES}, ts_rank(m.search_vector, q)::float8 AS rank
      FROM {T_MESSAGE} m, websearch_to_tsquery('simple', %s) q
     WHERE m.search_vector @@ q AND m.account_id = %s::bigint
       AND m.account_id IN ({VISIBLE_ACCOUNTS})
     ORDER BY rank DESC, m.sort_date DESC, m.id DESC
     LIMIT 51
"""
SQL_CHANGES = f"""
    SELECT id, object_type, kind, object_id, account_id, created_at
      FROM {T_EVENT} WHERE owner_id = %s AND id > %s ORDER BY id LIMIT 101
"""


def bench_token(user_id: int) -> str:
    """A bench user's API token: derived, since the store keeps only its digest (knox)."""
    return hmac.new(settings.SECRET_KEY.encode(), str(user_id).encode(), "sha256").hexdigest()


def first_column(results: list[list[tuple]], statement: int = 0) -> list[int]:
    return [row[0] for row in results[statement]]


def page_ids(data: Any) -> list[int]:
    return [item["id"] for item in data["results"]]


def load_bench(cursor: Any) -> tuple[list[BenchUser], dict[str, tuple[int, int]]]:
    cursor.execute(
        f"""
        SELECT u.id, a.id, f.id
          FROM {T_USER} u
          JOIN {T_ACCOUNT} a ON a.owner_id = u.id
          JOIN {T_FOLDER} f ON f.account_id = a.id AND f.role = 'inbox'
         WHERE u.username LIKE %s
         ORDER BY u.id
        """,
        [BENCH_PREFIX + "%"],
    )
    users = [BenchUser(uid, bench_token(uid), aid, fid) for uid, aid, fid in cursor.fetchall()]
    accounts = [u.account_id for u in users]
    owners = [u.user_id for u in users]
    ranges = {}
    for name, table, column, keys in (
        ("thread", T_THREAD, "account_id", accounts),
        ("message", T_MESSAGE, "account_id", accounts),
        ("event", T_EVENT, "owner_id", owners),
    ):
        cursor.execute(
            f"SELECT min(id), max(id) FROM {table} WHERE {column} = ANY(%s)", [list(keys)]
        )
        ranges[name] = cursor.fetchone()
    return users, ranges


def pick_search_words(cursor: Any, corpus: Corpus, accounts: list[int]) -> list[tuple[str, float]]:
    """Words of medium frequency: their measured share of the bench messages."""
    cursor.execute(f"SELECT count(*) FROM {T_MESSAGE} WHERE account_id = ANY(%s)", [accounts])
    total = cursor.fetchone()[0]
    low, high = SEARCH_WORD_SHARE
    picked = []
    for word, _ in corpus.search_candidates()[: SEARCH_WORDS * 2]:
        cursor.execute(
            f"SELECT count(*) FROM {T_MESSAGE}"
            " WHERE search_vector @@ to_tsquery('simple', %s) AND account_id = ANY(%s)",
            [word, accounts],
        )
        share = cursor.fetchone()[0] / total
        if low <= share <= high:
            picked.append((word, share))
        if len(picked) == SEARCH_WORDS:
            break
    if not picked:
        raise SystemExit("no search word of medium frequency found")
    return picked


def pick_frequent_words(
    cursor: Any, corpus: Corpus, accounts: list[int]
) -> list[tuple[str, float]]:
    """The most frequent words (in FREQUENT_WORD_SHARE of the messages or more), measured."""
    cursor.execute(f"SELECT count(*) FROM {T_MESSAGE} WHERE account_id = ANY(%s)", [accounts])
    total = cursor.fetchone()[0]
    picked = []
    for word in corpus.frequent_candidates()[: FREQUENT_WORDS * 4]:
        cursor.execute(
            f"SELECT count(*) FROM {T_MESSAGE}"
            " WHERE search_vector @@ to_tsquery('simple', %s) AND account_id = ANY(%s)",
            [word, accounts],
        )
        share = cursor.fetchone()[0] / total
        if share >= FREQUENT_WORD_SHARE:
            picked.append((word, share))
        if len(picked) == FREQUENT_WORDS:
            break
    if not picked:
        raise SystemExit("no frequent search word found")
    return picked


class Sampler:
    """Random objects of the bench data with their owners, fetched in batches."""

    def __init__(self, cursor: Any, users: list[BenchUser], ranges: dict) -> None:
        self.cursor = cursor
        self.ranges = ranges
        self.by_user = {u.user_id: u for u in users}
        self.by_account = {u.account_id: u for u in users}
        self.users = users
        self.pools: dict[str, list[tuple[int, BenchUser]]] = {}

    def pick(self, kind: str, rng: random.Random) -> tuple[int, BenchUser]:
        pool = self.pools.setdefault(kind, [])
        while not pool:
            pool.extend(self._batch(kind, rng, 256))
        return pool.pop()

    def _batch(self, kind: str, rng: random.Random, size: int) -> list[tuple[int, BenchUser]]:
        low, high = self.ranges[kind]
        ids = [rng.randint(low, high) for _ in range(size)]
        if kind == "event":
            sql = f"SELECT id, owner_id FROM {T_EVENT} WHERE id = ANY(%s)"
            lookup = self.by_user
        else:
            table = T_THREAD if kind == "thread" else T_MESSAGE
            sql = f"SELECT id, account_id FROM {table} WHERE id = ANY(%s)"
            lookup = self.by_account
        self.cursor.execute(sql, [ids])
        found = {pk: lookup.get(key) for pk, key in self.cursor.fetchall()}
        return [(pk, found[pk]) for pk in ids if found.get(pk) is not None]


def endpoints(sampler: Sampler, words: list[str], frequent: list[str]) -> list[Endpoint]:
    def inbox(rng: random.Random) -> Case:
        user = rng.choice(sampler.users)
        return Case(
            f"/api/messages/?folder={user.inbox_id}",
            user.token,
            [(SQL_INBOX, [user.inbox_id, user.user_id])],
        )

    def threads(rng: random.Random) -> Case:
        user = rng.choice(sampler.users)
        return Case("/api/threads/", user.token, [(SQL_THREAD_LIST, [user.user_id])])

    def thread(rng: random.Random) -> Case:
        pk, user = sampler.pick("thread", rng)
        return Case(
            f"/api/threads/{pk}/",
            user.token,
            [(SQL_THREAD, [pk, user.user_id]), (SQL_THREAD_MESSAGES, [pk])],
        )

    def message(rng: random.Random) -> Case:
        pk, user = sampler.pick("message", rng)
        return Case(f"/api/messages/{pk}/", user.token, [(SQL_MESSAGE, [pk, user.user_id])])

    def search_among(
        vocabulary: list[str], ranked: bool = False
    ) -> Callable[[random.Random], Case]:
        return lambda rng: search(rng, rng.choice(vocabulary), ranked)

    def search(rng: random.Random, word: str, ranked: bool) -> Case:
        user = rng.choice(sampler.users)
        return Case(
            f"/api/messages/?q={word}&account={user.account_id}"
            + ("&order=relevance" if ranked else ""),
            user.token,
            [(SQL_SEARCH_RANKED if ranked else SQL_SEARCH, [word, user.account_id, user.user_id])],
        )

    def changes(rng: random.Random) -> Case:
        pk, user = sampler.pick("event", rng)
        return Case(
            f"/api/changes/?cursor={pk - 1}",
            user.token,
            [(SQL_CHANGES, [user.user_id, pk - 1])],
        )

    return [
        Endpoint("inbox list", inbox, page_ids, lambda r: first_column(r)[:PAGE]),
        Endpoint("thread list", threads, page_ids, lambda r: first_column(r)[:PAGE]),
        Endpoint(
            "thread detail",
            thread,
            lambda d: [d["id"], *(m["id"] for m in d["messages"])],
            lambda r: first_column(r, 0) + first_column(r, 1),
        ),
        Endpoint("message detail", message, lambda d: [d["id"]], first_column),
        Endpoint("search", search_among(words), page_ids, lambda r: first_column(r)[:PAGE]),
        Endpoint(
            "search frequent", search_among(frequent), page_ids, lambda r: first_column(r)[:PAGE]
        ),
        Endpoint(
            "search ranked",
            search_among(words, ranked=True),
            page_ids,
            lambda r: first_column(r)[:PAGE],
        ),
        Endpoint(
            "search frequent ranked",
            search_among(frequent, ranked=True),
            page_ids,
            lambda r: first_column(r)[:PAGE],
        ),
        Endpoint(
            "changes page",
            changes,
            lambda d: [c["id"] for c in d["changes"]],
            lambda r: first_column(r)[:CHANGES_PAGE],
        ),
    ]


def run_api(client: Client, case: Case) -> tuple[float, Any]:
    start = time.perf_counter()
    response = client.get(case.path, HTTP_AUTHORIZATION=f"Token {case.token}")
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        raise SystemExit(f"GET {case.path}: {response.status_code} {response.content[:300]!r}")
    return seconds, json.loads(response.content)


def run_sql(cursor: Any, case: Case) -> tuple[float, list[list[tuple]]]:
    start = time.perf_counter()
    results = []
    for sql, params in case.sql:
        cursor.execute(sql, params)
        results.append(cursor.fetchall())
    return time.perf_counter() - start, results


def measure(
    endpoint: Endpoint, client: Client, cursor: Any, rng: random.Random, rounds: int, warmup: int
) -> Result:
    for _ in range(warmup):
        case = endpoint.make(rng)
        run_api(client, case)
        run_sql(cursor, case)
    result = Result()
    for i in range(rounds):
        case = endpoint.make(rng)
        if i % 2:
            sql_seconds, rows = run_sql(cursor, case)
            api_seconds, data = run_api(client, case)
        else:
            api_seconds, data = run_api(client, case)
            sql_seconds, rows = run_sql(cursor, case)
        result.api.append(api_seconds)
        result.sql.append(sql_seconds)
        got, expected = endpoint.api_ids(data), endpoint.sql_ids(rows)
        result.compared += 1
        if got != expected:
            result.mismatches += 1
            result.first_mismatch = result.first_mismatch or (
                f"{case.path}: API {got[:6]}... SQL {expected[:6]}..."
            )
    return result


@dataclass
class Diagnosis:
    queries: list[int] = field(default_factory=list)
    db_seconds: list[float] = field(default_factory=list)
    slowest: tuple[float, str, Any] = (0.0, "", None)


def diagnose(endpoint: Endpoint, client: Client, rng: random.Random, count: int) -> Diagnosis:
    """Requests with the ORM's queries recorded: how many, how long, the slowest one."""
    diagnosis = Diagnosis()
    for _ in range(count):
        case = endpoint.make(rng)
        recorded: list[tuple[float, str, Any]] = []

        def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            start = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                recorded.append((time.perf_counter() - start, sql, params))  # noqa: B023

        with connection.execute_wrapper(record):
            run_api(client, case)
        diagnosis.queries.append(len(recorded))
        diagnosis.db_seconds.append(sum(seconds for seconds, _, _ in recorded))
        slowest = max(recorded, key=lambda item: item[0])
        if slowest[0] > diagnosis.slowest[0]:
            diagnosis.slowest = slowest
    return diagnosis


def explain(cursor: Any, sql: str, params: Any) -> str:
    statement = cursor.mogrify(sql, params).decode()
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement)
    plan = "\n".join(f"      {row[0]}" for row in cursor.fetchall())
    return f"    {' '.join(statement.split())}\n{plan}"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# Database and main ----------------------------------------------------------------------------


def ensure_database() -> bool:
    """Create the configured database when it does not exist (through `postgres`)."""
    db = settings.DATABASES["default"]
    params = {
        "dbname": "postgres",
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
    }
    server = psycopg2.connect(**{k: v for k, v in params.items() if v is not None})
    try:
        server.autocommit = True
        with server.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]])
            if cursor.fetchone():
                return False
            name = psycopg2.extensions.quote_ident(db["NAME"], cursor)
            cursor.execute(f"CREATE DATABASE {name}")
            return True
    finally:
        server.close()


def server_facts(cursor: Any) -> str:
    cursor.execute("SHOW server_version")
    version = cursor.fetchone()[0].split()[0]
    cursor.execute("SHOW shared_buffers")
    buffers = cursor.fetchone()[0]
    cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
    size = cursor.fetchone()[0]
    return f"PostgreSQL {version} (shared_buffers {buffers}, database {size})"


def table_sizes(cursor: Any) -> list[tuple[str, int, str]]:
    rows = []
    for table in (T_MESSAGE, T_THREAD, T_LOCATION, T_ATTACHMENT, T_EVENT):
        cursor.execute(
            f"SELECT (SELECT count(*) FROM {table}),"
            " pg_size_pretty(pg_total_relation_size(%s::regclass))",
            [table],
        )
        count, size = cursor.fetchone()
        rows.append((table, count, size))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000, help="default 1000000")
    parser.add_argument("--accounts", type=int, default=100, help="default 100")
    parser.add_argument("--rounds", type=int, default=200, help="requests per endpoint")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up requests per endpoint")
    parser.add_argument("--diagnose", type=int, default=30, help="recorded requests (default 30)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random sampling")
    parser.add_argument("--reseed", action="store_true", help="seed again even if present")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN every endpoint")
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.messages < args.accounts or args.rounds < 2:
        parser.error("need accounts >= 1, messages >= accounts, rounds >= 2")
    if args.messages / args.accounts >= 1 << 24:  # thread numbers are packed in 24 bits
        parser.error("at most 16,777,215 messages per account")
    if settings.DEBUG:
        print("warning: DEBUG is on; numbers will be worse than production", file=sys.stderr)
    if "testserver" not in settings.ALLOWED_HOSTS and "*" not in settings.ALLOWED_HOSTS:
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]

    if ensure_database():
        log(f"created database {settings.DATABASES['default']['NAME']}")
    call_command("migrate", verbosity=0)
    corpus = Corpus(DATA_SEED)

    present, seeded_note = existing_seed(args.messages, args.accounts)
    seeding: dict[str, float] | None = None
    if present and not args.reseed:
        log(f"reusing the bench data ({marker_text(args.messages, args.accounts)})")
    else:
        log(f"seeding {args.messages:,} messages over {args.accounts} accounts ...")
        seeding = seed(args, corpus)

    connection.ensure_connection()
    cursor = connection.connection.cursor()
    users, ranges = load_bench(cursor)
    if len(users) != args.accounts:
        raise SystemExit(f"expected {args.accounts} bench users, found {len(users)}; --reseed")
    words = pick_search_words(cursor, corpus, [u.account_id for u in users])
    frequent = pick_frequent_words(cursor, corpus, [u.account_id for u in users])
    rng = random.Random(args.seed)
    sampler = Sampler(cursor, users, ranges)
    client = Client()
    results: dict[str, Result] = {}
    diagnoses: dict[str, Diagnosis] = {}
    for endpoint in endpoints(sampler, [w for w, _ in words], [w for w, _ in frequent]):
        log(f"measuring {endpoint.name} ...")
        results[endpoint.name] = measure(endpoint, client, cursor, rng, args.rounds, args.warmup)
        if args.diagnose:
            diagnoses[endpoint.name] = diagnose(endpoint, client, rng, args.diagnose)

    print()
    print("API latency benchmark")
    print(
        f"  Python {platform.python_version()}, Django {django.get_version()}, "
        f"{server_facts(cursor)}, {os.cpu_count()} CPUs"
    )
    print(
        f"  data        {args.messages:,} messages, {args.accounts} accounts "
        f"(one user each), {marker_text(args.messages, args.accounts)}"
    )
    for table, count, size in table_sizes(cursor):
        print(f"              {table:<28} {count:>12,} rows {size:>10}")
    share = ", ".join(f"{w} {s:.2%}" for w, s in words)
    print(f"  search      one of: {share} (of all messages), with account=")
    share = ", ".join(f"{w} {s:.0%}" for w, s in frequent)
    print(f"  frequent    one of: {share} (of all messages), with account=")
    print(f"  rounds      {args.rounds} per endpoint after {args.warmup} warm-up, seed {args.seed}")
    print()
    if seeding is None:
        print(f"  seeding: reused existing data ({seeded_note or 'seeding time not recorded'})")
    else:
        print("  seeding:")
        for step, seconds in seeding.items():
            print(f"    {step:<44} {seconds:8.1f}s")
        print(f"    {'total':<44} {sum(seeding.values()):8.1f}s")
    print()
    header = (
        f"  {'endpoint':<22} {'API p50':>8} {'API p95':>8} {'SQL p50':>8} {'SQL p95':>8}"
        f" {'ratio p95':>10} {'target':>12} {'ok?':>4}"
    )
    print(header + "    (milliseconds)")
    print("  " + "-" * (len(header) - 2))
    missed, at_risk = [], []
    for name, result in results.items():
        api50, api95 = percentile(result.api, 0.5) * 1e3, percentile(result.api, 0.95) * 1e3
        sql50, sql95 = percentile(result.sql, 0.5) * 1e3, percentile(result.sql, 0.95) * 1e3
        target = TARGETS_MS[name]
        if target is None:
            ok = "-"
        else:
            ok = "yes" if api95 < NEAR_TARGET * target else "near" if api95 < target else "NO"
        if ok == "NO":
            missed.append(name)
        if ok in ("NO", "near"):
            at_risk.append(name)
        stated = "-" if target is None else f"p95 < {target}"
        print(
            f"  {name:<22} {api50:>8.1f} {api95:>8.1f} {sql50:>8.2f} {sql95:>8.2f}"
            f" {api95 / sql95:>9.1f}x {stated:>12} {ok:>4}"
        )
    if at_risk:
        print(f"  near: p95 within {1 - NEAR_TARGET:.0%} of the target (EXPLAIN below)")
    print()
    print("  API and SQL answers compared (same ids, same order):")
    for name, result in results.items():
        status = "all equal" if not result.mismatches else f"{result.mismatches} DIFFER"
        print(f"    {name:<22} {result.compared} compared, {status} {result.first_mismatch}")
    if diagnoses:
        print()
        print(f"  Inside the API requests ({args.diagnose} recorded per endpoint, p50):")
        print(f"    {'endpoint':<22} {'queries':>8} {'ORM SQL ms':>11} {'rest ms':>8}")
        for name, diagnosis in diagnoses.items():
            api50 = percentile(results[name].api, 0.5) * 1e3
            db50 = percentile(diagnosis.db_seconds, 0.5) * 1e3
            queries = statistics.median(diagnosis.queries)
            print(f"    {name:<22} {queries:>8.0f} {db50:>11.1f} {api50 - db50:>8.1f}")
    to_explain = list(diagnoses) if args.explain else [n for n in at_risk if n in diagnoses]
    for name in to_explain:
        seconds, sql, params = diagnoses[name].slowest
        print()
        print(f"  EXPLAIN {name}: its slowest ORM query ({seconds * 1e3:.1f} ms when recorded)")
        print(explain(cursor, sql, params))
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
