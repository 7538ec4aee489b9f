"""The fake's HTTP server and the handle a test holds (`GmailFake`)."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.gmail_fake import api, batch, discovery, tls
from tests.gmail_fake.auth import TokenError, Tokens
from tests.gmail_fake.consent import ConsentRefused, consent
from tests.gmail_fake.errors import (
    BACKEND_ERROR,
    RATE_LIMIT,
    UNAUTHORIZED,
    USER_RATE_LIMIT,
    ApiError,
    Fault,
    Faults,
    unauthenticated,
)
from tests.gmail_fake.mailbox import Mailbox
from tests.gmail_fake.push import Publisher
from tests.gmail_fake.quota import Quota

BATCH_PATHS = ("/batch", "/batch/gmail/v1")
AUTH_PATH = "/o/oauth2/auth"
CLIENT_ID = "fake-client-id.apps.googleusercontent.com"
CLIENT_SECRET = "fake-client-secret"
CERTS_MAX_AGE = 3600


class GmailFake:
    """A local Gmail API: users, their mailboxes, OAuth tokens, push and fault injection."""

    def __init__(self, host: str = "127.0.0.1", *, https: bool = True) -> None:
        self.tokens = Tokens()
        self.tokens.add_client(CLIENT_ID, CLIENT_SECRET)
        self.faults = Faults()
        self.quota = Quota()
        self.publisher = Publisher()
        self.users: dict[str, Mailbox] = {}
        self.calls: list[str] = []
        # The OIDC certificates: how often they were fetched, and the max-age they are served
        # with (Google's answer carries Cache-Control: public, max-age=N).
        self.certs_fetches = 0
        self.certs_max_age = CERTS_MAX_AGE
        self._lock = threading.Lock()
        fake = self

        class Handler(_Handler):
            gmail = fake

        self._dir = Path(tempfile.mkdtemp(prefix="gmail-fake-"))
        plain = ThreadingHTTPServer((host, 0), Handler)
        self._servers = [plain]
        self.plain_url = f"http://{host}:{plain.server_address[1]}"
        self.base_url = self.plain_url
        self.ca_certs: str | None = None
        if https:
            key_path, cert_path = tls.write_certificate(self._dir, host)
            self.ca_certs = str(cert_path)
            secure = ThreadingHTTPServer((host, 0), Handler)
            secure.socket = tls.server_context(key_path, cert_path).wrap_socket(
                secure.socket, server_side=True
            )
            self._servers.append(secure)
            self.base_url = f"https://{host}:{secure.server_address[1]}"
        # The token endpoint is plain http: google-api-python-client refreshes a batch's
        # credentials through a bare httplib2.Http(), which trusts no test certificate.
        self.token_uri = f"{self.plain_url}/token"
        self.certs_url = f"{self.plain_url}/oauth2/v1/certs"
        self.auth_uri = f"{self.base_url}{AUTH_PATH}"
        self.batch_uri = f"{self.base_url}/batch/gmail/v1"
        self.client_id, self.client_secret = CLIENT_ID, CLIENT_SECRET
        for server in self._servers:
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()

    # Test-facing controls

    def add_user(self, email: str) -> tuple[Mailbox, str]:
        """A new mailbox and a refresh token for it."""
        with self._lock:
            if email in self.users:
                raise ValueError(f"{email} exists")
            self.users[email] = Mailbox(email, self._changed)
        return self.users[email], self.tokens.grant(email)

    def consent(
        self,
        authorization_url: str,
        email: str,
        *,
        granted: list[str] | None = None,
        deny: bool = False,
    ) -> str:
        """EMAIL answers the consent screen of AUTHORIZATION_URL: the redirect URL back to the
        platform, with `code` and `state` (or `error=access_denied` when DENY). GRANTED: the
        scopes the user left ticked (default: every one requested). Raises ConsentRefused
        where Google would show its own error page."""
        return consent(
            self.tokens,
            list(self.users),
            self.auth_uri,
            authorization_url,
            email,
            granted=granted,
            deny=deny,
        )

    def fail_next(self, times: int = 1, fault: Fault = RATE_LIMIT) -> None:
        self.faults.add(fault, times)

    def rate_limit_next(self, times: int = 1) -> None:
        self.faults.add(RATE_LIMIT, times)

    def user_rate_limit_next(self, times: int = 1) -> None:
        self.faults.add(USER_RATE_LIMIT, times)

    def backend_error_next(self, times: int = 1) -> None:
        self.faults.add(BACKEND_ERROR, times)

    def unauthorized_next(self, times: int = 1) -> None:
        """The next TIMES calls answer 401 and their access token dies (Google stopped
        accepting it before its expiry): a client refreshes it and tries again."""
        self.faults.add(UNAUTHORIZED, times)

    def slow_next(self, times: int = 1, seconds: float = 1.0) -> None:
        """The next TIMES calls answer SECONDS late."""
        self.faults.add_delay(seconds, times)

    def subscribe(
        self,
        topic: str,
        endpoint: str,
        *,
        audience: str | None = None,
        service_account: str = "",
    ) -> str:
        """A push subscription of `topic` to `endpoint`; returns the subscription's name.
        With an `audience`, each push carries an OIDC token verifiable at `certs_url`, as
        SERVICE_ACCOUNT (default gmail-push@<project>.iam.gserviceaccount.com)."""
        return self.publisher.subscribe(
            topic, endpoint, audience=audience, service_account=service_account
        )

    def rotate_oidc_key(self) -> None:
        """Sign pushes with a new key (new key id), as Google rotates its keys."""
        self.publisher.rotate_key()

    def reset(self) -> None:
        with self._lock:
            self.users.clear()
            self.calls.clear()
            self.certs_fetches = 0
            self.certs_max_age = CERTS_MAX_AGE
            self.tokens = Tokens()
            self.tokens.add_client(CLIENT_ID, CLIENT_SECRET)
        self.faults.clear()
        self.quota.reset()
        self.publisher.clear()

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self.publisher.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    # Internals

    def _mailbox(self, email: str) -> Mailbox:
        mailbox = self.users.get(email)
        if mailbox is None:
            raise unauthenticated()
        return mailbox

    def _changed(self, mailbox: Mailbox, labels: set[str]) -> None:
        watch = mailbox.watch
        if watch is not None and watch.expiration > time.time() * 1000 and watch.wants(labels):
            self.publisher.publish(watch.topic_name, mailbox.email, mailbox.history_id)

    def call(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        """One API call (alone or as a batch part): status and JSON bytes."""
        try:
            status, payload = self._call(method, target, headers, body)
        except ApiError as error:
            status, payload = error.code, error.body()
        return status, b"" if payload is None else json.dumps(payload).encode()

    def _call(self, method: str, target: str, headers: dict[str, str], body: bytes):
        url = urllib.parse.urlsplit(target)
        spec, params = discovery.resolve(method, url.path)
        authorization = headers.get("authorization")
        email = self.tokens.user_of(authorization)
        if email is None:
            raise unauthenticated()
        user_id = urllib.parse.unquote(params.pop("userId"))
        if user_id not in ("me", email):
            raise ApiError(403, "Delegation denied for " + email, "forbidden")
        user_path = url.path.split("/users/", 1)[1].partition("/")[2]
        self.calls.append(f"{method} {user_path}")
        delay = self.faults.take_delay()
        if delay:
            time.sleep(delay)
        fault = self.faults.take()
        if fault is not None:
            if fault.code == 401:
                self.tokens.forget(authorization)
            raise fault.error()
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        discovery.check_query(spec, query)
        route = api.handler_of(spec.id)
        self.quota.spend(email, route.units)
        request = api.Request(
            method=method,
            path=url.path,
            query=query,
            headers=headers,
            body=body,
            mailbox=self._mailbox(email),
            publish_denied=frozenset(self.publisher.denied),
        )
        return route.handler(request, {k: urllib.parse.unquote(v) for k, v in params.items()})


class _Handler(BaseHTTPRequestHandler):
    gmail: GmailFake
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in one write with no Nagle delay: otherwise each small
        # response waits for the client's delayed ACK (about 40 ms a call on Linux).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(
        self, status: int, body: bytes, content_type: str = "application/json; charset=UTF-8"
    ) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        if body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _api(self) -> None:
        status, body = self.gmail.call(self.command, self.path, self._headers(), self._body())
        self._send(status, body)

    do_DELETE = do_PUT = do_PATCH = _api

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/oauth2/v1/certs":
            self._certs()
        elif path == AUTH_PATH:
            self._authorize()
        else:
            self._api()

    def _authorize(self) -> None:
        """A browser at the consent screen: the user named by `login_hint` consents at once."""
        query = urllib.parse.urlsplit(self.path).query
        hint = urllib.parse.parse_qs(query).get("login_hint", [""])[-1]
        try:
            target = self.gmail.consent(self.gmail.base_url + self.path, hint)
        except ConsentRefused as refused:
            self._send(400, str(refused).encode(), "text/plain; charset=utf-8")
            return
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/token":
            self._token()
        elif path in BATCH_PATHS:
            self._batch()
        else:
            self._api()

    def _certs(self) -> None:
        self.gmail.certs_fetches += 1
        body = json.dumps(self.gmail.publisher.signer.certs()).encode()
        self.send_response(200, "OK")
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Cache-Control", f"public, max-age={self.gmail.certs_max_age}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _token(self) -> None:
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(self._body().decode()).items()}
        try:
            answer = self.gmail.tokens.token(form, self.headers.get("Authorization"))
            status = 200
        except TokenError as error:
            status, answer = error.status, error.body
        self._send(status, json.dumps(answer).encode())

    def _batch(self) -> None:
        headers = self._headers()
        outer = {k: v for k, v in headers.items() if k == "authorization"}
        try:
            content_type, body = batch.handle(
                headers.get("content-type", ""), self._body(), outer, self.gmail.call
            )
        except batch.BatchError as error:
            answer = ApiError(400, str(error), "badRequest").body()
            self._send(400, json.dumps(answer).encode())
            return
        self._send(200, body, content_type)
