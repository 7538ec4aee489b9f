from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from emailplatform.topics import IncomingMessage

pytest_plugins = ["tests.imap_fixtures"]

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
