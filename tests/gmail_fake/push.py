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

from tests.gmail_fake.oidc import TokenSigner

ATTEMPTS = 3
RETRY_DELAY = 0.02


@dataclass(frozen=True)
class Subscription:
    name: str
    endpoint: str
    audience: str | None
    service_account: str


@dataclass
class Delivery:
    subscription: Subscription
    body: dict
    status: int | None = None


class Publisher:
    def __init__(self) -> None:
        self.signer = TokenSigner()
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._ids = itertools.count(1_000_000_000_000)
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self.deliveries: list[Delivery] = []
        self.denied: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="gmail-fake-push", daemon=True)
        self._thread.start()

    def subscribe(
        self, topic: str, endpoint: str, *, audience: str | None = None, service_account: str = ""
    ) -> str:
        """A push subscription; with an `audience`, each push carries an OIDC token."""
        project = topic.split("/")[1]
        subscriptions = self._subscriptions.setdefault(topic, [])
        name = f"projects/{project}/subscriptions/gmail-push-{len(subscriptions) + 1}"
        account = service_account or f"gmail-push@{project}.iam.gserviceaccount.com"
        subscriptions.append(Subscription(name, endpoint, audience, account))
        return name

    def rotate_key(self) -> None:
        self.signer = TokenSigner()

    def deny(self, topic: str) -> None:
        """Take the Publisher role on TOPIC away from Gmail: users.watch on it answers 403."""
        self.denied.add(topic)

    def clear(self) -> None:
        self._subscriptions.clear()
        self.denied.clear()
        self.deliveries.clear()

    def publish(self, topic: str, email_address: str, history_id: int) -> None:
        data = json.dumps({"emailAddress": email_address, "historyId": history_id}).encode()
        message_id = str(next(self._ids))
        published = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for subscription in self._subscriptions.get(topic, []):
            body = {
                "message": {
                    "data": base64.b64encode(data).decode(),
                    "messageId": message_id,
                    "message_id": message_id,
                    "publishTime": published,
                    "publish_time": published,
                },
                "subscription": subscription.name,
            }
            self._queue.put(Delivery(subscription, body))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while (delivery := self._queue.get()) is not None:
            subscription = delivery.subscription
            headers = {"Content-Type": "application/json"}
            if subscription.audience is not None:
                token = self.signer.token(subscription.audience, subscription.service_account)
                headers["Authorization"] = f"Bearer {token}"
            for _ in range(ATTEMPTS):
                delivery.status = _post(subscription.endpoint, delivery.body, headers)
                if delivery.status is not None and 200 <= delivery.status < 300:
                    break
                time.sleep(RETRY_DELAY)
            self.deliveries.append(delivery)


def _post(endpoint: str, body: dict, headers: dict[str, str]) -> int | None:
    request = urllib.request.Request(  # noqa: S310 - the test registers its own http endpoint
        endpoint,
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None
