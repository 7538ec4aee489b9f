"""Authentication (token and session), one error shape everywhere, and the documented schema."""

from datetime import datetime, timedelta

import pytest
import yaml
from django.db import connection
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def login(client, password="pw-alice-123"):  # noqa: S107
    return client.post(
        "/api/auth/token/",
        {"username": "alice", "password": password},
        content_type="application/json",
    )


def test_token_for_username_and_password(client, user):
    response = login(client)
    assert response.status_code == 200
    token = response.json()["token"]
    expiry = datetime.fromisoformat(response.json()["expiry"])
    assert timedelta(days=29) < expiry - timezone.now() <= timedelta(days=30)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/accounts/").status_code == 200
    again = login(client).json()["token"]
    assert again != token, "each login is a token of its own"
    for each in (token, again):
        api.credentials(HTTP_AUTHORIZATION=f"Token {each}")
        assert api.get("/api/accounts/").status_code == 200


def test_a_form_body_gets_a_token_too(client, user):
    """What `curl -d username=alice -d password=...` (urlencoded) and `curl -F` send."""
    form = "username=alice&password=pw-alice-123"
    urlencoded = client.post(
        "/api/auth/token/", form, content_type="application/x-www-form-urlencoded"
    )
    multipart = client.post("/api/auth/token/", {"username": "alice", "password": "pw-alice-123"})
    for response in (urlencoded, multipart):
        assert response.status_code == 200, response.content
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
        assert api.get("/api/accounts/").status_code == 200
    wrong = client.post("/api/auth/token/", {"username": "alice", "password": "nope"})
    assert wrong.status_code == 400


def test_the_api_root_lists_the_endpoints(client):
    index = client.get("/api/").json()
    assert index["token"] == "http://testserver/api/auth/token/"
    assert index["messages"] == "http://testserver/api/messages/"
    assert index["docs"] == "http://testserver/api/docs/"
    for name, url in index.items():
        response = client.get(url.removeprefix("http://testserver"))
        assert response.status_code in (200, 401, 405), (name, response.status_code)


def test_tokens_are_stored_hashed(client, user):
    token = login(client).json()["token"]
    stored = AuthToken.objects.get(user=user)
    assert token not in (stored.digest, stored.token_key) and len(stored.digest) == 128
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM knox_authtoken")
        assert token not in repr(cursor.fetchall())


def test_an_expired_token_is_refused(client, user):
    token = login(client).json()["token"]
    AuthToken.objects.filter(user=user).update(expiry=timezone.now() - timedelta(seconds=1))
    response = client.get("/api/accounts/", HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert not AuthToken.objects.filter(user=user).exists()


def test_a_user_keeps_a_bounded_number_of_tokens(client, user, settings):
    settings.API_TOKENS_PER_USER = 3
    tokens = [login(client).json()["token"] for _ in range(5)]
    assert AuthToken.objects.filter(user=user).count() == 3
    live = [
        t
        for t in tokens
        if client.get("/api/accounts/", HTTP_AUTHORIZATION=f"Token {t}").status_code == 200
    ]
    assert live == tokens[-3:]


def test_a_token_that_is_not_text_is_401(client):
    response = client.get("/api/accounts/", HTTP_AUTHORIZATION="Token \xff\xfe")
    assert response.status_code == 401


def test_token_refused_for_a_wrong_password(client, user):
    response = client.post(
        "/api/auth/token/",
        {"username": "alice", "password": "nope"},
        content_type="application/json",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "Unable to log in" in error["message"]
    missing = client.post("/api/auth/token/", {}, content_type="application/json")
    assert set(missing.json()["error"]["fields"]) == {"username", "password"}


def test_invalid_token_is_401(client):
    response = client.get("/api/accounts/", HTTP_AUTHORIZATION="Token not-a-token")
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": "authentication_failed",
        "message": "Invalid token.",
    }


def test_session_authentication_with_csrf(user, account):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/api/accounts/").json()["results"][0]["id"] == account.pk
    refused = client.patch(f"/api/accounts/{account.pk}/", {"display_name": "x"}, format="json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert "CSRF" in refused.json()["error"]["message"]


def test_method_not_allowed_has_the_error_shape(api):
    response = api.put("/api/accounts/", {}, format="json")
    assert response.status_code == 405
    assert response.json()["error"] == {
        "code": "method_not_allowed",
        "message": 'Method "PUT" not allowed.',
    }


def test_unknown_api_url_is_a_json_404(api):
    for url in ("/api/nothing-here/", "/api/messages/abc/", "/api/messages/99999999999999999999/"):
        response = api.get(url)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_malformed_json_is_a_parse_error(api, account):
    response = api.generic(
        "PATCH", f"/api/accounts/{account.pk}/", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_form_bodies_are_unsupported(api, account):
    response = api.patch(f"/api/accounts/{account.pk}/", {"display_name": "x"})
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_schema_documents_every_endpoint_and_its_errors(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    paths = schema["paths"]
    assert set(paths) == {
        "/api/auth/token/",
        "/api/accounts/",
        "/api/accounts/{id}/",
        "/api/accounts/{provider}/authorize/",
        "/api/accounts/{id}/sync/",
        "/api/accounts/{id}/test-connection/",
        "/api/accounts/{id}/folders/",
        "/api/folders/",
        "/api/threads/",
        "/api/threads/{id}/",
        "/api/messages/",
        "/api/messages/{id}/",
        "/api/messages/{id}/raw/",
        "/api/attachments/{id}/download/",
        "/api/changes/",
        "/api/outbound/",
        "/api/outbound/batch/",
        "/api/outbound/{id}/",
        "/api/outbound/{id}/send/",
        "/api/outbound/{id}/cancel/",
        "/api/outbound/{id}/attachments/",
        "/api/outbound/{id}/attachments/{attachment}/",
        "/api/webhooks/",
        "/api/webhooks/{id}/",
        "/api/webhooks/{id}/rotate-secret/",
        "/api/webhooks/{id}/deliveries/",
        "/api/webhooks/{id}/deliveries/{delivery_pk}/redeliver/",
    }
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert responses["400"]["content"]["application/json"]["schema"] == error_ref
            if path != "/api/auth/token/":
                assert {"401", "403"} <= set(responses), (method, path)
            if "{id}" in path or "{provider}" in path:
                assert "404" in responses, (method, path)
    message_filters = {p["name"] for p in paths["/api/messages/"]["get"]["parameters"]}
    assert message_filters >= {
        "account",
        "folder",
        "thread",
        "is_read",
        "is_flagged",
        "unread",
        "flagged",
        "has_attachments",
        "from",
        "to",
        "subject",
        "after",
        "before",
        "q",
        "cursor",
        "page_size",
    }
    create = schema["components"]["schemas"]["AccountCreateInputRequest"]
    assert set(create["discriminator"]["mapping"]) == {"gmail", "imap", "local"}
    account_out = schema["components"]["schemas"]["AccountOutput"]["properties"]
    assert "password" not in account_out and "oauth2_token" not in account_out
    assert "409" in paths["/api/accounts/{id}/sync/"]["post"]["responses"]
    assert "202" in paths["/api/messages/{id}/"]["patch"]["responses"]


def test_swagger_ui_is_served_without_a_cdn(client, settings):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower() and "https://" not in page
    assert f"{settings.STATIC_URL}drf_spectacular_sidecar/" in page
