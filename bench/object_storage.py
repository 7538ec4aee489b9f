#!/usr/bin/env python3
"""Object storage benchmark: the media storage on the local disk against S3.

    make bench-object-storage BENCH_ARGS="--messages 2000"
    python bench/object_storage.py --messages 2000      (DATABASE_URL etc. already set)

The S3 endpoint is moto's standalone server (`python -m moto.server`, an in-memory S3 in one
Python process), started here on a free 127.0.0.1 port unless --endpoint names another
(MinIO, say). Its figures are moto's, over loopback: they show what the platform's S3 path
costs in requests and bytes, not what AWS would take. Printed, for each storage: ingest
throughput (messages_upsert in batches, every batch a segment), reading one message of a
segment (a ranged GET of its bytes) against downloading the segment whole, and one big
object through multipart upload.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailplatform.settings")

import django  # noqa: E402

django.setup()

import boto3  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.files.base import ContentFile  # noqa: E402
from django.core.files.storage import default_storage  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from emailplatform.object_storage import save_confirmed  # noqa: E402
from emailplatform.topics import IncomingMessage  # noqa: E402
from messages.ingest import messages_upsert  # noqa: E402
from messages.models import Account, RawMessage  # noqa: E402
from tests.mailfactory import make_mail  # noqa: E402

BENCH_USERNAME = "bench-object-storage"
KEY, SECRET, REGION = "bench-key", "bench-secret", "us-east-1"
MIB = 2**20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("moto's S3 server did not start")


def mails(count: int, run: str) -> list[bytes]:
    body = "The quarterly figures are attached; see the table below.\n" * 40
    return [
        make_mail(
            f"Report {i}",
            message_id=f"<{run}-{i}@bench.invalid>",
            body=body + f"row {i}\n",
            attachments=[(f"r{i}.csv", "text/csv", f"{run},{i},".encode() * 300)],
        )
        for i in range(count)
    ]


def bench(label: str, account: Account, args: argparse.Namespace, s3) -> None:
    run = uuid.uuid4().hex[:8]
    raws = mails(args.messages, run)
    started = time.perf_counter()
    for start in range(0, len(raws), args.batch_size):
        chunk = raws[start : start + args.batch_size]
        messages_upsert(
            account=account, items=[IncomingMessage(raw=r, folders=["INBOX"]) for r in chunk]
        )
    elapsed = time.perf_counter() - started
    print(
        f"[{label}] ingest: {args.messages} messages in {elapsed:.2f} s = "
        f"{args.messages / elapsed:.0f} msg/s (batches of {args.batch_size}, one segment each)"
    )

    rows = list(RawMessage.objects.filter(message__account=account, file__startswith="raw/")[:200])
    segment = rows[0].file.name
    size = default_storage.size(segment)
    started = time.perf_counter()
    for row in rows:
        row.content()
    ranged = (time.perf_counter() - started) / len(rows)
    started = time.perf_counter()
    for row in rows[:20]:
        with default_storage.open(row.file.name, "rb") as handle:
            handle.read()
    whole = (time.perf_counter() - started) / 20
    print(
        f"[{label}] one message of a {size / 1024:.0f} KiB segment: {ranged * 1000:.2f} ms "
        f"(ranged read of ~{rows[0].length / 1024:.1f} KiB); the whole segment: "
        f"{whole * 1000:.2f} ms"
    )

    big = ContentFile(os.urandom(args.big_mib * MIB))
    started = time.perf_counter()
    name = save_confirmed(f"raw/{account.pk}/bench-{run}.zst", big)
    elapsed = time.perf_counter() - started
    parts = ""
    if s3 is not None:
        etag = s3.head_object(Bucket=args.bucket, Key=name)["ETag"].strip('"')
        parts = f", {etag.split('-')[1] if '-' in etag else 1} part(s)"
    print(
        f"[{label}] {args.big_mib} MiB object, written and confirmed: {elapsed:.2f} s = "
        f"{args.big_mib / elapsed:.0f} MiB/s{parts}"
    )
    default_storage.delete(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--big-mib", type=int, default=64)
    parser.add_argument("--endpoint", help="an S3 endpoint (default: moto, started here)")
    parser.add_argument("--bucket", default=f"bench-{uuid.uuid4().hex[:8]}")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    settings.RAW_IN_ROW_MAX_BYTES = 0

    process = None
    endpoint = args.endpoint
    if endpoint is None:
        process, endpoint = start_moto()
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )
    s3.create_bucket(Bucket=args.bucket)
    media = tempfile.TemporaryDirectory(prefix="bench-media-")
    local = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": media.name},
    }
    remote = {
        "BACKEND": "emailplatform.object_storage.MailObjectStorage",
        "OPTIONS": {
            "bucket_name": args.bucket,
            "endpoint_url": endpoint,
            "region_name": REGION,
            "access_key": KEY,
            "secret_key": SECRET,
            "file_overwrite": True,
            "multipart_threshold": 16 * MIB,
            "multipart_chunksize": 8 * MIB,
        },
    }
    users = get_user_model().objects
    try:
        for label, backend, client in (("local", local, None), ("s3", remote, s3)):
            users.filter(username=BENCH_USERNAME).delete()
            user = users.create_user(BENCH_USERNAME, f"{BENCH_USERNAME}@bench.invalid")
            account = Account.objects.create(
                owner=user,
                provider=Account.Provider.LOCAL,
                email_address=f"{BENCH_USERNAME}@bench.invalid",
            )
            with override_settings(STORAGES={**settings.STORAGES, "default": backend}):
                bench(label, account, args, client)
    finally:
        users.filter(username=BENCH_USERNAME).delete()
        media.cleanup()
        if process is not None:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
