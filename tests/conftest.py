from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from knox.models import AuthToken
from rest_framework.test import APIClient

from emailplatform.topics import IncomingMessage

pytest_plugins = [
    "tests.imap_fixtures",
    "tests.postfix_fixtures",
    "tests.gmail_fake.fixtures",
    "tests.smtp_fake",
    "tests.s3_fixtures",
]

DATA_DIR = Path(__file__).parent / "data"
CORPUS_DIR = DATA_DIR / "corpus"


def corpus_files() -> list[Path]:
    return sorted(
        p
        for p in CORPUS_DIR.rglob("*")
        if p.is_file() and p.name != "README.md" and not p.name.startswith(".")
    )


@pytest.fixture(autouse=True)
def _isolated_media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    if not settings.CREDENTIALS_KEYS:
        settings.CREDENTIALS_KEYS = [Fernet.generate_key().decode()]


@pytest.fixture(autouse=True)
def _inline_ingest(settings):
    """A sync stores its batches in its own process (the same consumer service), so that a
    test of sync logic needs no message worker; the queue itself, with real workers, is
    exercised by tests/smtp_sync/test_pipeline.py, which sets INGEST_DELIVERY = "queue"."""
    settings.INGEST_DELIVERY = "inline"


def new_token(user) -> str:
    return AuthToken.objects.create(user)[1]


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {new_token(user)}")
    return client


# Rates for tests that are not about throttling: high enough never to refuse (each throttle
# has its own test, tests/messages/api/test_throttling.py, with the production rates).
GENEROUS_RATES = {
    "anon": "100000/minute",
    "user": "100000/minute",
    "account_create": "100000/minute",
    "test_connection": "100000/minute",
    "sync": "100000/minute",
    "send": "100000/minute",
}


@pytest.fixture(autouse=True)
def _throttle_state(settings, request):
    """Each test counts in its own key space (parallel workers share one Redis), with the
    generous rates unless it asks for `production_rates`."""
    from axes.handlers.proxy import AxesProxyHandler

    # django-axes keeps its handler, and the handler its cache: a new one per test.
    AxesProxyHandler.implementation = None
    request.addfinalizer(lambda: setattr(AxesProxyHandler, "implementation", None))
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "KEY_PREFIX": f"test-throttle-{uuid.uuid4().hex}",
        }
    }
    if "production_rates" not in request.fixturenames:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": GENEROUS_RATES,
        }


@pytest.fixture
def production_rates(settings):
    """The rates the environment gives (the defaults of emailplatform/settings.py)."""
    return settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "pw-alice-123")


@pytest.fixture
def account(user):
    from messages.models import Account

    return Account.objects.create(
        owner=user, provider=Account.Provider.LOCAL, email_address="alice@example.com"
    )


def incoming(raw: bytes, folder: str | None = None, **meta) -> IncomingMessage:
    return IncomingMessage(raw=raw, folders=[folder] if folder else [], **meta)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def pytest_configure(config):
    """Each xdist worker gets its own Redis database, so parallel tests never share a queue."""
    import os

    from django.conf import settings

    from emailplatform.celery import app

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = 1 + int(worker.removeprefix("gw") or 0)
    base = settings.CELERY_BROKER_URL.rsplit("/", 1)[0]
    settings.CELERY_BROKER_URL = f"{base}/{index}"
    app.conf.broker_url = settings.CELERY_BROKER_URL
    # The suite's own servers (Dovecot, proxies, fakes) listen on IMAP_TEST_HOST, a loopback
    # address the outbound guard refuses unless allowed: allow that address (every port)
    # explicitly; worker processes started by tests inherit it from the environment.
    # tests/smtp_sync/test_ssrf.py narrows the list to prove the refusals.
    test_host = os.environ.get("IMAP_TEST_HOST")
    if test_host:
        allowed = [*settings.OUTBOUND_ALLOWED_NETWORKS, test_host]
        settings.OUTBOUND_ALLOWED_NETWORKS = allowed
        os.environ["OUTBOUND_ALLOWED_NETWORKS"] = ",".join(allowed)
    if os.environ.get("PRIVATE_REDIS") == "1":
        import redis

        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
