"""Behind a TLS-terminating proxy: the links the API builds are https, http is redirected,
HSTS is sent (all set from the environment: SECURE_PROXY_SSL_HEADER, SECURE_SSL_REDIRECT,
SECURE_HSTS_*)."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def behind_proxy(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.ALLOWED_HOSTS = ["mail.example.com"]


PROXIED = {"HTTP_HOST": "mail.example.com", "HTTP_X_FORWARDED_PROTO": "https"}


def test_links_use_https_behind_the_proxy(behind_proxy, api, mailbox):
    page = api.get("/api/messages/?page_size=1", **PROXIED)
    assert page.status_code == 200
    assert page.json()["next"].startswith("https://mail.example.com/api/messages/")
    assert page["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    detail = api.get(f"/api/messages/{mailbox.report.pk}/", **PROXIED)
    assert detail.json()["raw_url"].startswith("https://")
    assert all(a["download_url"].startswith("https://") for a in detail.json()["attachments"])


def test_plain_http_is_redirected_but_health_checks_are_not(behind_proxy, api, client):
    response = api.get(
        "/api/messages/", HTTP_HOST="mail.example.com", HTTP_X_FORWARDED_PROTO="http"
    )
    assert response.status_code == 301
    assert response["Location"] == "https://mail.example.com/api/messages/"
    assert client.get("/healthz", HTTP_HOST="mail.example.com").status_code != 301
