"""Cloud Pub/Sub push delivery of Gmail's watch notifications.

Each change to a watched mailbox publishes `{"emailAddress", "historyId"}` on the watch's
topic; every push subscription of that topic gets a POST of the Pub/Sub push body
`{"message": {"data", "messageId", "publishTime", ...}, "subscription"}`, from a background
thread as Pub/Sub would, retried a few times while the endpoint does not answer 2xx.
"""

from __future__ import annotations

import base64
import itertools
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

ATTEMPTS = 3
RETRY_DELAY = 0.02


@dataclass
class Delivery:
    subscription: str
    endpoint: str
    body: dict
    status: int | None = None


class Publisher:
    def __init__(self) -> None:
        self._subscriptions: dict[str, list[tuple[str, str]]] = {}
        self._ids = itertools.count(1_000_000_000_000)
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self.deliveries: list[Delivery] = []
        self._thread = threading.Thread(target=self._run, name="gmail-fake-push", daemon=True)
        self._thread.start()

    def subscribe(self, topic: str, endpoint: str, name: str | None = None) -> str:
        project = topic.split("/")[1] if topic.startswith("projects/") else "test-project"
        subscription = f"projects/{project}/subscriptions/{name or 'gmail-push'}"
        self._subscriptions.setdefault(topic, []).append((subscription, endpoint))
        return subscription

    def clear(self) -> None:
        self._subscriptions.clear()
        self.deliveries.clear()

    def publish(self, topic: str, email_address: str, history_id: int) -> None:
        data = json.dumps({"emailAddress": email_address, "historyId": history_id}).encode()
        message_id = str(next(self._ids))
        published = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for subscription, endpoint in self._subscriptions.get(topic, []):
            body = {
                "message": {
                    "data": base64.b64encode(data).decode(),
                    "messageId": message_id,
                    "message_id": message_id,
                    "publishTime": published,
                    "publish_time": published,
                },
                "subscription": subscription,
            }
            self._queue.put(Delivery(subscription, endpoint, body))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while (delivery := self._queue.get()) is not None:
            for _ in range(ATTEMPTS):
                delivery.status = _post(delivery.endpoint, delivery.body)
                if delivery.status is not None and 200 <= delivery.status < 300:
                    break
                time.sleep(RETRY_DELAY)
            self.deliveries.append(delivery)


def _post(endpoint: str, body: dict) -> int | None:
    request = urllib.request.Request(  # noqa: S310 - the test registers its own http endpoint
        endpoint,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None
