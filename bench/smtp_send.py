#!/usr/bin/env python3
"""SMTP send benchmark: messages through the outbox API to a local SMTP server, end to end (from
the first API call until every message is `sent`), next to a bare smtplib loop sending the same
messages over one connection to the same server in the same run.

    make bench-smtp
    python bench/smtp_send.py [--messages 2000] [--batch 100] [--concurrency 2] [--rounds 2]
                              [--paths send,copy]
                              (services' env already set: scripts/devservices.py exec --temp)

The platform's path, as in production: `POST /api/outbound/batch/` with --batch messages a call
(100 by default; --batch 1: `POST /api/outbound/`, one message a call), each with `send: true`,
through the whole Django stack in-process (token auth, DRF, the outbox's checks, the MIME
built, the rows queued, the change events), one client calling in sequence; the send tasks on
the `smtp` queue (Redis), a batch's messages due together as bursts (one task for up to
OUTBOX_BURST_MAX messages of the account: messages.outbox_burst); a real Celery worker
(`celery worker -Q smtp`, prefork, --concurrency processes) running `smtp_sync.send_outbound`:
claim, sending limits, SMTP (one connection per process for a burst), then `sent`.

Two paths, each run every round:
- send: an account whose server files sent mail itself (saveSentCopy false, as for Gmail's
  SMTP): the platform sends, and looks in Sent for the server's copy. This is the work the bare
  loop does, and the path the 2x target is checked on.
- copy: the platform's copy in the account's Sent folder on the private Dovecot (the burst's
  copies appended in one MULTIAPPEND before sending, each copy's keyword changed before and
  after its SMTP transaction) and the copies stored in the mail store. Reported next to the
  bare loop, which writes no copy and stores nothing, and next to a bare loop that also
  APPENDs each message (\\Seen) to Sent over one IMAP connection, after its SMTP transaction
  (a Dovecot user of its own, so that the outbox's Sent folder does not grow by it); no
  target: the platform also stores each copy in the mail store.
The SMTP server (bench/smtp_sink_process.py, aiosmtpd in a process of its own) accepts and
counts every message. The account's sending limits are lifted for the run.

Each path sends from its own account (its own Dovecot user: the copy path's Sent folder grows,
the send path's holds what its server would file). The bare loop: smtplib, one connection,
AUTH, then `sendmail` of each message's MIME bytes (the very bytes the outbox built) to its
recipient, in sequence. The machine drifts, so for each path the outbox run and the bare loop
alternate, --rounds times; in each round the bare loop runs twice, once what the outbox run
left behind has settled, and its faster time counts. The ratio is of the totals, and each
round's must meet the target too.

Bench data: the Django user `bench-smtp-send` and a Dovecot user, removed afterwards. The
database is migrated first.
"""

from __future__ import annotations

import argparse
import os
import platform
import smtplib
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")
os.environ.setdefault("INGEST_DELIVERY", "inline")
os.environ.setdefault("THROTTLE_USER", "10000000/minute")
os.environ.setdefault("THROTTLE_SEND", "10000000/minute")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from imapclient import IMAPClient  # noqa: E402
from knox.models import AuthToken  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from bench.benchdata import bench_user_remove, dovecot_env  # noqa: E402
from bench.message_workers import BenchWorker  # noqa: E402
from messages.models import Account, OutboundMessage  # noqa: E402
from smtp_sync.accounts import ImapAccountInput, imap_account_create  # noqa: E402

BENCH_USERNAME = "bench-smtp-send"
TARGET_RATIO = 2.0
PATHS = {
    "send": "send path (the server files sent mail itself: no copy by the platform)",
    "copy": "with the Sent copy (MULTIAPPEND to Dovecot, the copies stored)",
}
SETTLE_SECONDS = 2.0
BODY = (
    "Hello,\n\nthe figures for the quarter are in; the summary follows below, the details in "
    "the shared folder.\n\n" + "A line of the report, long enough to look like prose. " * 30
)


def log(text: str) -> None:
    print(text, flush=True)


class Sink:
    """bench/smtp_sink_process.py, started and stopped."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "smtp_sink_process.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "PORT":
            raise SystemExit("the SMTP sink did not start")
        self.port = int(line[1])

    def received(self) -> int:
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline().split()[1])

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def dovecot_user(users_dir: Path) -> tuple[str, str]:
    username = f"benchsmtp{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    (users_dir / username).write_text(f"{username}:{{PLAIN}}{password}\n")
    return username, password


def message(account: Account, i: int) -> dict:
    return {
        "account": account.pk,
        "to": [{"name": f"Recipient {i}", "address": f"rcpt{i}@example.org"}],
        "subject": f"Quarterly figures, part {i}",
        "text": BODY,
        "send": True,
    }


def compose(client: APIClient, account: Account, first: int, count: int) -> list[int]:
    """Messages FIRST .. FIRST+COUNT-1 composed and queued: one `POST /api/outbound/` when
    COUNT is 1, else one `POST /api/outbound/batch/`."""
    if count == 1:
        url, body = "/api/outbound/", message(account, first)
    else:
        url = "/api/outbound/batch/"
        body = {"messages": [message(account, first + i) for i in range(count)]}
    response = client.post(url, body, format="json")
    if response.status_code != 201:
        raise SystemExit(f"POST {url} answered {response.status_code}: {response.content[:500]}")
    answer = response.json()
    return [answer["id"]] if count == 1 else [m["id"] for m in answer["messages"]]


def submit_path(batch: int) -> str:
    return "POST /api/outbound/" if batch == 1 else f"POST /api/outbound/batch/ x{batch}"


def wait_sent(ids: list[int], timeout: float) -> float:
    """Seconds (perf_counter) when every message of IDS is sent; exits on a failure."""
    deadline = time.monotonic() + timeout
    pending = OutboundMessage.objects.filter(pk__in=ids).exclude(state="sent")
    while True:
        states = dict(pending.values_list("state").annotate(n=django.db.models.Count("id")))
        if not states:
            return time.perf_counter()
        bad = {s: n for s, n in states.items() if s in ("failed", "cancelled", "unknown")}
        if bad or time.monotonic() > deadline:
            example = pending.exclude(last_error="").values_list("last_error", flat=True).first()
            raise SystemExit(f"not sent: {states} (e.g. {example!r})")
        time.sleep(0.02)


def outbox_run(
    client: APIClient, account: Account, count: int, batch: int
) -> tuple[list[int], float, float]:
    """(ids, seconds to submit, seconds until all sent), BATCH messages a call."""
    ids: list[int] = []
    start = time.perf_counter()
    for first in range(0, count, batch):
        ids += compose(client, account, first, min(batch, count - first))
    submitted = time.perf_counter()
    done = wait_sent(ids, timeout=max(600, count))
    return ids, submitted - start, done - start


def sender_account(
    owner: Any, path: str, login: str, password: str, host: str, imap_port: int, smtp_port: int
) -> Account:
    """The account PATH sends from: its own Dovecot user (its own Sent folder), the SMTP sink,
    its sending limits lifted; it saves its copy in Sent only for the copy path."""
    account = imap_account_create(
        owner=owner,
        data=ImapAccountInput(
            email_address=f"{login}@example.com",
            display_name="Bench Sender",
            imap_host=host,
            imap_port=imap_port,
            imap_security="none",
            username=login,
            password=password,
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            smtp_security="none",
            allow_internal=True,
        ),
        start_sync=False,
    )
    account.sync_settings = {
        **(account.sync_settings or {}),
        "sendPerMinute": 10**7,
        "sendPerDay": 10**7,
        "saveSentCopy": path == "copy",
    }
    account.save(update_fields=["sync_settings"])
    return account


def report(rounds: dict[str, list[tuple[float, ...]]], n: int, submitted_by: str) -> None:
    log("")
    log(f"{'path':<66} {'seconds':>8} {'msg/s':>8}")
    for path, runs in rounds.items():
        log(PATHS[path])
        for number, (submit_s, outbox_s, bare_s, *appending) in enumerate(runs, 1):
            log(f"  round {number}")
            submitted = f"outbox: {submitted_by} (201 queued), in sequence"
            log(f"    {submitted:<62} {submit_s:>8.2f} {n / submit_s:>8.1f}")
            end_to_end = "outbox end to end: first API call -> all sent"
            log(f"    {end_to_end:<62} {outbox_s:>8.2f} {n / outbox_s:>8.1f}")
            bare = "bare smtplib loop, one connection"
            log(f"    {bare:<62} {bare_s:>8.2f} {n / bare_s:>8.1f}")
            for seconds in appending:
                bare = "bare smtplib loop + IMAP APPEND to Sent, one connection each"
                log(f"    {bare:<62} {seconds:>8.2f} {n / seconds:>8.1f}")
    log("")
    for path, runs in rounds.items():
        ratio = sum(r[1] for r in runs) / sum(r[2] for r in runs)
        worst = max(r[1] / r[2] for r in runs)
        if path == "send":
            met = ratio <= TARGET_RATIO and worst <= TARGET_RATIO
            verdict = f"target within {TARGET_RATIO:.0f}x: {'met' if met else 'missed'}"
        else:
            verdict = "the bare loop writes no copy and stores nothing: reported, no target"
        log(
            f"bare / outbox, {path}: {ratio:.2f}x over {len(runs)} rounds (worst round "
            f"{worst:.2f}x; {verdict})"
        )
        if all(len(r) > 3 for r in runs):
            ratio = sum(r[1] for r in runs) / sum(r[3] for r in runs)
            worst = max(r[1] / r[3] for r in runs)
            log(
                f"bare with APPEND / outbox, {path}: {ratio:.2f}x over {len(runs)} rounds (worst"
                f" round {worst:.2f}x; the outbox also stores each copy: reported, no target)"
            )


def bare_run(
    port: int, messages: list[tuple[str, str, bytes]], sent: IMAPClient | None = None
) -> float:
    """Seconds to send MESSAGES over one SMTP connection; each also APPENDed to SENT's Sent
    folder (\\Seen) after its transaction when SENT is given."""
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    smtp.login("bench", "bench")
    start = time.perf_counter()
    for sender, recipient, raw in messages:
        smtp.sendmail(sender, [recipient], raw)
        if sent is not None:
            sent.append("Sent", raw, flags=[b"\\Seen"])
    took = time.perf_counter() - start
    smtp.quit()
    return took


def imap_sent(host: str, port: int, login: str, password: str) -> IMAPClient:
    """A logged-in session of LOGIN whose Sent folder exists."""
    client = IMAPClient(host, port=port, ssl=False, timeout=60)
    client.login(login, password)
    if not client.folder_exists("Sent"):
        client.create_folder("Sent")
    return client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="messages each path sends first, not counted (default: --messages, a round: the "
        "worker processes warm, and the tables past the growth that sets off autovacuum)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="outbox run then bare loop, this many times (alternated: the machine drifts)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=100,
        help="messages per compose call: POST /api/outbound/batch/ (1: POST /api/outbound/)",
    )
    parser.add_argument(
        "--paths",
        default=",".join(PATHS),
        help="which outbox paths to run each round: send (the account's server files sent "
        "mail itself: saveSentCopy false), copy (the copy appended to Sent and stored)",
    )
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = args.messages
    paths = [p for p in args.paths.split(",") if p]
    if not paths or set(paths) - set(PATHS):
        parser.error(f"--paths: a list of {', '.join(PATHS)}")

    host, imap_port, users_dir, _home = dovecot_env("make bench-smtp")
    allowed = sorted({*settings.OUTBOUND_ALLOWED_NETWORKS, host, "127.0.0.1"})
    settings.OUTBOUND_ALLOWED_NETWORKS = allowed
    if "testserver" not in settings.ALLOWED_HOSTS and "*" not in settings.ALLOWED_HOSTS:
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    call_command("migrate", verbosity=0)
    bench_user_remove(BENCH_USERNAME)

    work = Path(tempfile.mkdtemp(prefix="bench-smtp-"))
    logins = {path: dovecot_user(users_dir) for path in paths}
    bare_login = dovecot_user(users_dir)
    sink = Sink()
    worker = None
    sent = None
    try:
        owner = get_user_model().objects.create_user(BENCH_USERNAME)
        accounts = {
            path: sender_account(owner, path, *logins[path], host, imap_port, sink.port)
            for path in paths
        }
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(owner)[1]}")

        worker = BenchWorker(
            ["smtp"],
            args.concurrency,
            work / "worker.log",
            {"INGEST_DELIVERY": "inline", "OUTBOUND_ALLOWED_NETWORKS": ",".join(allowed)},
            label="smtp",
        )
        worker.start()
        log(
            f"{args.messages} messages a run, composed by {submit_path(args.batch)}, worker "
            f"concurrency {args.concurrency}, paths {', '.join(paths)}; "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"{os.cpu_count()} CPUs"
        )
        bare_run(sink.port, [("warm@example.com", "warm@example.org", b"Subject: w\r\n\r\nw")])

        sent = imap_sent(host, imap_port, *bare_login)
        # {path: [(seconds to submit, seconds until all sent, bare loop seconds[, with APPEND
        # seconds]), ...]}
        rounds: dict[str, list[tuple[float, ...]]] = {path: [] for path in paths}
        for path, account in accounts.items():
            outbox_run(client, account, args.warmup, args.batch)
            for _ in range(args.rounds):
                time.sleep(SETTLE_SECONDS)
                before = sink.received()
                ids, submit_s, outbox_s = outbox_run(client, account, args.messages, args.batch)
                received = sink.received() - before
                if received != args.messages:
                    raise SystemExit(f"the SMTP server received {received} of {args.messages}")
                rows = OutboundMessage.objects.filter(pk__in=ids).order_by("id")
                messages = [
                    (account.email_address, r.recipients.get().address, bytes(r.raw)) for r in rows
                ]
                time.sleep(SETTLE_SECONDS)  # the worker's last copies, PostgreSQL's autovacuum
                bare_s = min(bare_run(sink.port, messages) for _ in range(2))
                if path == "copy":
                    appending_s = min(bare_run(sink.port, messages, sent) for _ in range(2))
                    rounds[path].append((submit_s, outbox_s, bare_s, appending_s))
                else:
                    rounds[path].append((submit_s, outbox_s, bare_s))
    finally:
        if sent is not None:
            sent.logout()
        if worker is not None:
            worker.stop()
        sink.stop()
        bench_user_remove(BENCH_USERNAME)
        for login, _password in [*logins.values(), bare_login]:
            (users_dir / login).unlink(missing_ok=True)

    report(rounds, args.messages, submit_path(args.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
