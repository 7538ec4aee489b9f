"""How fast the fake answers a full-sync shaped workload through google-api-python-client.

    .venv/bin/python -m tests.gmail_fake.measure --messages 2000

Lists every id (pages of 500), then fetches each message `format=raw` in batches of 50 (the
size Google recommends) and one by one for a sample; prints the rates, and what checking a
request against the discovery document costs per call. A baseline for the Gmail sync's own
benchmark: time the sync spends beyond these numbers is its own.
"""

from __future__ import annotations

import argparse
import time
import timeit

from tests.gmail_fake import discovery
from tests.gmail_fake.fixtures import gmail_service, new_batch
from tests.gmail_fake.server import GmailFake
from tests.mailfactory import make_mail

BATCH_SIZE = 50


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--single", type=int, default=200)
    args = parser.parse_args()
    fake = GmailFake()
    try:
        mailbox, refresh_token = fake.add_user("bench@gmail.com")
        body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n" * 40
        for i in range(args.messages):
            mailbox.add_message(make_mail(f"m{i}", body=body, minutes=i))
        gmail = gmail_service(fake, refresh_token)
        gmail.users().getProfile(userId="me").execute()
        # Each gmail.users().messages() builds its methods anew (milliseconds): build once.
        messages = gmail.users().messages()

        started = time.perf_counter()
        ids, token = [], None
        while True:
            page = (messages.list(userId="me", maxResults=500, pageToken=token)).execute()
            ids += [m["id"] for m in page.get("messages", [])]
            token = page.get("nextPageToken")
            if not token:
                break
        listed = time.perf_counter() - started

        fetched: list[int] = []
        started = time.perf_counter()
        for offset in range(0, len(ids), BATCH_SIZE):
            batch = new_batch(fake, lambda _id, resp, exc: fetched.append(len(resp["raw"])))
            for gid in ids[offset : offset + BATCH_SIZE]:
                batch.add(messages.get(userId="me", id=gid, format="raw"))
            batch.execute()
        batched = time.perf_counter() - started

        sample = ids[: args.single]
        started = time.perf_counter()
        for gid in sample:
            messages.get(userId="me", id=gid, format="raw").execute()
        single = time.perf_counter() - started

        print(f"messages            {len(ids)} listed, {len(fetched)} fetched raw")
        print(f"list (500/page)     {listed:.3f} s  {len(ids) / listed:,.0f} ids/s")
        print(f"batch get raw x{BATCH_SIZE}  {batched:.3f} s  {len(fetched) / batched:,.0f} msg/s")
        print(f"single get raw      {single:.3f} s  {len(sample) / single:,.0f} msg/s")
        print(f"quota units used    {fake.quota.used['bench@gmail.com']:,}")
        print(f"request check       {check_cost(ids[0]) * 1e6:.1f} us a call (discovery)")
    finally:
        fake.close()


def check_cost(gid: str, number: int = 20000) -> float:
    """Seconds the fake spends finding a messages.get call's method and checking its query."""

    def check() -> None:
        method, _ = discovery.resolve("GET", f"/gmail/v1/users/me/messages/{gid}")
        discovery.check_query(method, {"format": ["raw"], "alt": ["json"]})

    return min(timeit.repeat(check, number=number, repeat=3)) / number


if __name__ == "__main__":
    main()
