from __future__ import annotations

import os

import pytest

from tests.gmail_fake.tls import write_certificate
from webhooks import services

from .receiver import receiving

HOST = os.environ.get("IMAP_TEST_HOST", "127.0.0.1")


@pytest.fixture
def tls_files(tmp_path_factory):
    return write_certificate(tmp_path_factory.mktemp("webhook-tls"), HOST)


@pytest.fixture
def receiver(tls_files, settings):
    """An HTTPS receiver whose certificate the platform trusts (WEBHOOK_CA_CERTS)."""
    settings.WEBHOOK_CA_CERTS = str(tls_files[1])
    yield from receiving(HOST, tls=tls_files)


@pytest.fixture
def plain_receiver():
    yield from receiving(HOST)


@pytest.fixture
def fast_retries(settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 30.0
    settings.WEBHOOK_TIMEOUT_SECONDS = 2.0
    return settings


def endpoint_for(user, url, **kwargs):
    endpoint, secret = services.endpoint_create(owner=user, url=url, **kwargs)
    return endpoint, secret
