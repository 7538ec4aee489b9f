#!/usr/bin/env python3
"""`make audit`: repeat the attacks of issue 12 against a running app and print what got through.

Run under `scripts/devservices.py exec --temp` (private PostgreSQL, Redis and Dovecot). It
migrates, creates two users (alice with an IMAP account on the private Dovecot whose password is
a canary, and bob), starts the production server (gunicorn, DEBUG off) on a loopback port, then:

- canaries: the IMAP password, alice's login password and the wrong passwords tried are
  searched in a pg_dump, every Redis database, the server's logs, every API answer, the admin's
  pages and the schema (0 expected);
- cross-user: bob's token on every endpoint that names one of alice's objects (0 not 404);
- SSRF: bob creates accounts (and tests connections) to loopback and private addresses; an
  attempt fails unless the API refused it with 400 *before connecting*. Nothing leaves the
  machine: the server runs with a socket guard that refuses (and records) every connection to a
  non-loopback address, and loopback targets point at a listener of this script that records
  who reached it;
- brute force: 200 wrong passwords on /api/auth/token/ and on /admin/login/ (refused with 429
  after AXES_FAILURE_LIMIT), 50 test-connection and 50 sync requests (throttled at their rates);
- fuzzed bad inputs (deep JSON, runs of search operators, impossible UTC offsets, cursors,
  undecodable tokens): 0 answers 5xx.

Prints a table (check | attempts | failures | expected) and exits 1 if any check failed.
"""

from __future__ import annotations

import base64
import errno
import glob
import ipaddress
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable

IMAP_CANARY = f"canary-imap-{secrets.token_hex(8)}"
LOGIN_CANARY = f"canary-login-{secrets.token_hex(8)}"
WRONG_PREFIX = f"canary-wrong-{secrets.token_hex(4)}"
CANARIES = (IMAP_CANARY, LOGIN_CANARY, WRONG_PREFIX)


# The server: gunicorn with a guard on outbound connections ------------------------------
def _guard_sockets(record: Path) -> None:
    """Refuse (and record) every connection to a non-loopback address: nothing leaves here."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def allowed(sock: socket.socket, address: object) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True
        host = address[0] if isinstance(address, tuple) else str(address)
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def note(address: object) -> None:
        with record.open("a") as f:
            f.write(f"{os.getpid()} {address!r}\n")

    def connect(self: socket.socket, address: object) -> None:
        if not allowed(self, address):
            note(address)
            raise OSError(errno.ENETUNREACH, "audit guard: no traffic off this machine")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        if not allowed(self, address):
            note(address)
            return errno.ENETUNREACH
        return real_connect_ex(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]


def serve(port: int, record: Path) -> None:
    """`audit.py --serve PORT RECORD`: gunicorn (sync workers fork after the guard is set)."""
    _guard_sockets(record)
    from gunicorn.app.wsgiapp import run

    sys.argv = [
        "gunicorn",
        "emailplatform.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--timeout",
        "60",
        "--access-logfile",
        "-",
    ]
    run()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Listener:
    """A TCP listener on loopback that records connections (the SSRF targets' stand-in)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits = 0
        self.sockets = []
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            try:
                s = socket.socket(family)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, self.port))
                s.listen(16)
            except OSError:
                continue
            self.sockets.append(s)
            threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, s: socket.socket) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            self.hits += 1
            conn.close()


# HTTP --------------------------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict = field(default_factory=dict)

    def json(self) -> dict:
        return json.loads(self.body)


class Http:
    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base
        self.token = token
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        raw: bytes | None = None,
        form: dict | None = None,
        headers: dict | None = None,
    ) -> Answer:
        data, all_headers = None, dict(headers or {})
        if self.token:
            all_headers.setdefault("Authorization", f"Token {self.token}")
        if raw is not None:
            data, all_headers["Content-Type"] = raw, "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data, all_headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        for key, value in all_headers.items():
            req.add_header(key, value)
        try:
            with self.opener.open(req, timeout=120) as response:
                return Answer(response.status, response.read(), dict(response.headers))
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.read(), dict(exc.headers))

    def cookie(self, name: str) -> str:
        return next((c.value for c in self.jar if c.name == name), "")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return None


# Checks ------------------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    attempts: int = 0
    failures: int = 0
    expected: str = "0"
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def fail(self, note: str) -> None:
        self.failures += 1
        if len(self.notes) < 16:
            self.notes.append(note)

    @property
    def ok(self) -> bool:
        return self.failures == 0


def found_canary(blob: bytes) -> str | None:
    for canary in CANARIES:
        if canary.encode() in blob:
            return canary
    return None


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), Path(sys.argv[3]))
        return 0
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="audit-"))
    os.environ.update(
        DEBUG="0",
        DJANGO_SETTINGS_MODULE="emailplatform.settings",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        # The audit talks plain HTTP on loopback: cookies must travel without TLS.
        SESSION_COOKIE_SECURE="0",
        CSRF_COOKIE_SECURE="0",
        LOG_LEVEL="INFO",
    )
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    if not os.environ.get("CREDENTIALS_KEYS"):
        os.environ["CREDENTIALS_KEYS"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    for var in ("IMAP_TEST_HOST", "DOVECOT_USERS_DIR", "DATABASE_URL", "REDIS_URL"):
        if not os.environ.get(var):
            print(f"{var} is not set: run `make audit` (scripts/devservices.py exec --temp)")
            return 2
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True)

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    from messages.models import Account, Attachment, Folder, Message
    from messages.outbox import outbound_create
    from smtp_sync.accounts import ImapAccountInput, imap_account_create
    from smtp_sync.sync import ImapAccountSync

    # Users, and alice's IMAP account on the private Dovecot (password: the canary).
    user_model = get_user_model()
    alice = user_model.objects.create_user("alice", "alice@example.com", LOGIN_CANARY)
    bob = user_model.objects.create_user("bob", "bob@example.com", secrets.token_urlsafe(16))
    root_password = secrets.token_urlsafe(16)
    user_model.objects.create_superuser("root", "root@example.com", root_password)
    # The admin brute force targets another staff user (root is locked out of nothing).
    user_model.objects.create_user(
        "operator", "op@example.com", secrets.token_urlsafe(16), is_staff=True
    )
    imap_user = f"u{uuid.uuid4().hex[:12]}"
    users_dir = Path(os.environ["DOVECOT_USERS_DIR"])
    (users_dir / imap_user).write_text(f"{imap_user}:{{PLAIN}}{IMAP_CANARY}\n")
    host, port = os.environ["IMAP_TEST_HOST"], int(os.environ["IMAP_TEST_PORT"])
    from imapclient import IMAPClient

    with IMAPClient(host, port=port, ssl=False, timeout=30) as imap:
        imap.login(imap_user, IMAP_CANARY)
        imap.append(
            "INBOX",
            b"From: Carol <carol@example.net>\r\nTo: alice@example.com\r\n"
            b"Subject: Quarterly report\r\nMessage-ID: <audit@x>\r\n"
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
            b"--b\r\nContent-Type: text/plain\r\n\r\nFigures attached.\r\n"
            b'--b\r\nContent-Type: text/plain; name="n.txt"\r\n'
            b"Content-Disposition: attachment; filename=n.txt\r\n\r\nnotes\r\n--b--\r\n",
        )
    account = imap_account_create(
        owner=alice,
        data=ImapAccountInput(
            email_address=f"{imap_user}@example.com",
            imap_host=host,
            imap_port=port,
            imap_security="none",
            username=imap_user,
            password=IMAP_CANARY,
        ),
        start_sync=False,
    )
    ImapAccountSync(account).sync()
    message = Message.objects.filter(account=account).first()
    ids = {
        "account": account.pk,
        "message": message.pk,
        "thread": message.thread_id,
        "attachment": Attachment.objects.filter(message=message).first().pk,
        "folder": Folder.objects.filter(account=account).first().pk,
        "outbound": outbound_create(
            user=alice,
            data={
                "account": account.pk,
                "to": [{"name": "Carol", "address": "carol@example.net"}],
                "subject": "Audit draft",
            },
        ).pk,
        # Bob's own account (it sends), to name alice's mail from.
        "bob_account": Account.objects.create(
            owner=bob, provider="imap", email_address="bob@example.org"
        ).pk,
    }
    alice_token = AuthToken.objects.create(alice)[1]
    bob_token = AuthToken.objects.create(bob)[1]

    # The server.
    web_port = free_port()
    guard_record = work / "guard.log"
    guard_record.touch()
    server_log = (work / "server.log").open("wb")
    server = subprocess.Popen(
        [PY, __file__, "--serve", str(web_port), str(guard_record)],
        cwd=ROOT,
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{web_port}"
    checks: list[Check] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=10)  # noqa: S310 (loopback)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start: see its log above") from None
                time.sleep(0.3)
        anon = Http(base)
        as_alice = Http(base, alice_token)
        as_bob = Http(base, bob_token)

        # Some traffic that carries the canaries: logins, a connection test, a sync request.
        assert (
            anon.request(
                "POST", "/api/auth/token/", {"username": "alice", "password": LOGIN_CANARY}
            ).status
            == 200
        )
        as_alice.request("POST", f"/api/accounts/{account.pk}/test-connection/")
        as_alice.request("POST", f"/api/accounts/{account.pk}/sync/", {"full": False})
        as_alice.request("PATCH", f"/api/accounts/{account.pk}/", {"password": IMAP_CANARY})

        account_url = f"/api/accounts/{account.pk}"
        runs = [
            lambda: brute_force_api(anon, settings),
            lambda: brute_force_admin(base, settings),
            lambda: throttled(
                as_alice, f"{account_url}/test-connection/", None, "test_connection", settings
            ),
            lambda: throttled(as_alice, f"{account_url}/sync/", {"full": True}, "sync", settings),
            lambda: cross_user(as_bob, ids),
            lambda: ssrf(base, user_model, guard_record, Account),
            lambda: fuzz(anon, as_alice),
            lambda: canaries_in_answers(as_alice, base, root_password, ids),
        ]
        for run in runs:
            began = time.monotonic()
            checks.append(run())
            checks[-1].seconds = time.monotonic() - began
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        server_log.close()
    began = time.monotonic()
    checks.append(canaries_in_stores(work / "server.log", settings))
    checks[-1].seconds = time.monotonic() - began

    print()
    print(f"{'check':<64} {'attempts':>8} {'failures':>8}  {'expected':<22} {'s':>5}")
    print("-" * 112)
    for c in checks:
        print(f"{c.name:<64} {c.attempts:>8} {c.failures:>8}  {c.expected:<22} {c.seconds:>5.1f}")
    print("-" * 112)
    for check in checks:
        for note in check.notes:
            print(f"  {check.name}: {note}")
    failed = [c.name for c in checks if not c.ok]
    took = time.monotonic() - started
    print(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed in {took:.0f} s")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


# Brute force and throttles ------------------------------------------------------------------
def brute_force_api(anon: Http, settings) -> Check:
    limit = settings.AXES_FAILURE_LIMIT
    check = Check(
        "200 wrong passwords, /api/auth/token/ (not 429 after limit)",
        expected=f"0 (first {limit - 1} are 400)",
    )
    for i in range(200):
        answer = anon.request(
            "POST", "/api/auth/token/", {"username": "alice", "password": f"{WRONG_PREFIX}-{i}"}
        )
        check.attempts += 1
        locked = i >= limit - 1
        if locked and (answer.status != 429 or "Retry-After" not in answer.headers):
            check.fail(f"attempt {i + 1}: {answer.status}")
        if not locked and answer.status != 400:
            check.fail(f"attempt {i + 1} (before the limit): {answer.status}")
    right = anon.request(
        "POST", "/api/auth/token/", {"username": "alice", "password": LOGIN_CANARY}
    )
    check.attempts += 1
    if right.status != 429:
        check.fail(f"the right password while locked out: {right.status}")
    return check


def brute_force_admin(base: str, settings) -> Check:
    limit = settings.AXES_FAILURE_LIMIT
    check = Check(
        "200 wrong passwords, /admin/login/ (not 429 after limit)",
        expected=f"0 (first {limit - 1} are 200)",
    )
    browser = Http(base)
    browser.request("GET", "/admin/login/")
    for i in range(200):
        answer = browser.request(
            "POST",
            "/admin/login/?next=/admin/",
            form={
                "csrfmiddlewaretoken": browser.cookie("csrftoken"),
                "username": "operator",
                "password": f"{WRONG_PREFIX}-admin-{i}",
            },
            headers={"Referer": base + "/admin/login/"},
        )
        check.attempts += 1
        locked = i >= limit - 1
        if locked and (answer.status != 429 or "Retry-After" not in answer.headers):
            check.fail(f"attempt {i + 1}: {answer.status}")
        if not locked and answer.status != 200:
            check.fail(f"attempt {i + 1} (before the limit): {answer.status}")
    return check


def throttled(client: Http, path: str, body: object, scope: str, settings) -> Check:
    rate = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope]
    allowed = int(rate.split("/")[0])
    check = Check(f"50 POST {path.split('/')[-2]} in a row (passed beyond {rate})", expected="0")
    passed = 0
    for _ in range(50):
        answer = client.request("POST", path, body)
        check.attempts += 1
        if answer.status != 429:
            passed += 1
    # The first call (made earlier with the canary traffic) counts too.
    for n in range(max(0, passed - allowed)):
        check.fail(f"call {allowed + n + 1} was not throttled")
    return check


# Cross-user --------------------------------------------------------------------------------
TARGETED = [
    ("GET", "/api/accounts/{account}/", None),
    ("PATCH", "/api/accounts/{account}/", {"display_name": "pwned"}),
    ("POST", "/api/accounts/{account}/sync/", {"full": True}),
    ("POST", "/api/accounts/{account}/test-connection/", None),
    ("GET", "/api/accounts/{account}/folders/", None),
    ("GET", "/api/threads/{thread}/", None),
    ("GET", "/api/messages/{message}/", None),
    ("PATCH", "/api/messages/{message}/", {"is_read": True}),
    ("PATCH", "/api/messages/{message}/", {"trash": True}),
    ("GET", "/api/messages/{message}/raw/", None),
    ("GET", "/api/attachments/{attachment}/download/", None),
    ("GET", "/api/outbound/{outbound}/", None),
    ("PATCH", "/api/outbound/{outbound}/", {"subject": "pwned"}),
    ("POST", "/api/outbound/{outbound}/send/", {}),
    ("POST", "/api/outbound/{outbound}/cancel/", None),
    ("DELETE", "/api/accounts/{account}/", None),
]
LISTS = [
    "/api/accounts/",
    "/api/folders/?account={account}",
    "/api/threads/?account={account}",
    "/api/messages/?account={account}",
    "/api/messages/?thread={thread}",
    "/api/messages/?folder={folder}",
    "/api/messages/?q=quarterly",
    "/api/outbound/?account={account}",
    "/api/changes/",
]


def cross_user(bob: Http, ids: dict) -> Check:
    check = Check("bob on alice's objects, every endpoint (not 404 / listed)")
    for method, path, body in TARGETED:
        answer = bob.request(method, path.format(**ids), body)
        check.attempts += 1
        if answer.status != 404:
            check.fail(f"{method} {path}: {answer.status}")
    # Sending from alice's account; answering or forwarding her mail, or sending her
    # attachment, from his own.
    to = [{"address": "bob@example.org"}]
    for extra in (
        {"account": ids["account"]},
        {"account": ids["bob_account"], "reply_to_message": ids["message"]},
        {"account": ids["bob_account"], "forward_of": ids["message"]},
        {"account": ids["bob_account"], "attachments": [ids["attachment"]]},
    ):
        answer = bob.request("POST", "/api/outbound/", {"to": to, "send": True, **extra})
        check.attempts += 1
        if answer.status != 404:
            check.fail(f"POST /api/outbound/ {sorted(extra)}: {answer.status}")
    for path in LISTS:
        answer = bob.request("GET", path.format(**ids))
        check.attempts += 1
        data = answer.json() if answer.status == 200 else {}
        owner_key = "id" if path == "/api/accounts/" else "account"
        alices = [r for r in data.get("results") or [] if r.get(owner_key) == ids["account"]]
        if answer.status != 200 or alices or data.get("changes"):
            check.fail(f"GET {path}: {answer.status} {answer.body[:80]!r}")
    return check


# SSRF --------------------------------------------------------------------------------------
SSRF_TARGETS = ["127.1", "2130706433", "0x7f000001", "localhost", "[::1]", "::1", "10.255.255.1"]


def ssrf(base: str, user_model, guard_record: Path, account_model) -> Check:
    check = Check("SSRF targets: create + test-connection (not refused pre-connect)")
    listener = Listener()
    from knox.models import AuthToken

    from smtp_sync.models import ImapSettings

    for n, target in enumerate(SSRF_TARGETS):
        # A non-staff user per target: the throttles (6 connection tests a minute) would
        # otherwise answer 429 and hide whether the address itself is refused.
        bob = user_model.objects.create_user(f"ssrf{n}", f"ssrf{n}@example.com", None)
        bob_http = Http(base, AuthToken.objects.create(bob)[1])
        host = target.strip("[]") if target == "[::1]" else target
        before_hits, before_guard = listener.hits, guard_record.read_text()
        answer = bob_http.request(
            "POST",
            "/api/accounts/",
            {
                "provider": "imap",
                "email_address": f"ssrf{n}@example.com",
                "password": "x",
                "settings": {
                    "imap_host": target,
                    "imap_port": listener.port,
                    "imap_security": "none",
                },
            },
        )
        check.attempts += 1
        reached = listener.hits > before_hits or guard_record.read_text() != before_guard
        if answer.status != 400 or reached:
            check.fail(
                f"create {target}: {answer.status}, connection {'made' if reached else 'not made'}"
            )
        # An account already stored with such a host (e.g. from before the guard): test it.
        stored = account_model.objects.create(
            owner=bob, provider="imap", email_address=f"stored{n}@example.com"
        )
        stored.set_credentials({"password": "x"})
        stored.save()
        ImapSettings.objects.create(
            account=stored,
            imap_host=host,
            imap_port=listener.port,
            imap_security="none",
            username="x",
        )
        before_hits, before_guard = listener.hits, guard_record.read_text()
        answer = bob_http.request("POST", f"/api/accounts/{stored.pk}/test-connection/")
        check.attempts += 1
        reached = listener.hits > before_hits or guard_record.read_text() != before_guard
        if answer.status != 400 or reached:
            made = "made" if reached else "not made"
            check.fail(f"test-connection {target}: {answer.status}, connection {made}")
        time.sleep(0.1)
    return check


# Fuzzed bad inputs --------------------------------------------------------------------------
def fuzz(anon: Http, api: Http) -> Check:
    check = Check("fuzzed bad inputs (answers 5xx)")
    rng = random.Random(12)
    requests: list[tuple[Http, str, str, dict]] = []
    for depth in (33, 1000, 5000, 100_000):
        for opener, closer in (("[", "]"), ('{"a":', "}")):
            raw = (opener * depth + "1" + closer * depth).encode()
            requests.append((anon, "POST", "/api/auth/token/", {"raw": raw}))
            requests.append((api, "POST", "/api/accounts/", {"raw": raw}))
    for n in (32, 33, 64, 500, 999):
        requests.append(
            (api, "GET", "/api/messages/?" + urllib.parse.urlencode({"q": "-" * n}), {})
        )
    for _ in range(150):
        q = "".join(rng.choice("-!|&():*<>\"' or") for _ in range(rng.randint(1, 120)))
        requests.append((api, "GET", "/api/messages/?" + urllib.parse.urlencode({"q": q}), {}))
    for _ in range(60):
        offset = f"{rng.choice('+-')}{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
        year = rng.choice([1, 2, 1970, 2026, 9999])
        when = f"{year:04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00:00:00{offset}"
        param = rng.choice(["after", "before"])
        requests.append((api, "GET", "/api/messages/?" + urllib.parse.urlencode({param: when}), {}))
        token = json.dumps({"p": [when, rng.randint(-5, 2**64)], "r": rng.random() < 0.5})
        cursor = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
        requests.append((api, "GET", f"/api/messages/?cursor={cursor}", {}))
    bad_tokens = [b"\xff\xfe", b"x" * 5000, b"'; DROP TABLE x;--", b"\x00"]
    for token in bad_tokens:
        requests.append(
            (
                anon,
                "GET",
                "/api/accounts/",
                {"headers": {"Authorization": "Token " + token.decode("latin-1")}},
            )
        )
    for client, method, path, extra in requests:
        try:
            answer = client.request(method, path, **extra)
        except (ValueError, http_client_errors()) as exc:  # a header the client cannot send
            check.notes.append(f"not sent: {path[:40]} ({type(exc).__name__})")
            continue
        check.attempts += 1
        if answer.status >= 500:
            check.fail(f"{method} {path[:80]}: {answer.status}")
    return check


def http_client_errors() -> type[Exception]:
    import http.client

    return http.client.HTTPException


# Canaries -------------------------------------------------------------------------------
def canaries_in_answers(api: Http, base: str, root_password: str, ids: dict) -> Check:
    check = Check("canary passwords in API, admin, schema answers")
    paths = [
        "/api/accounts/",
        "/api/accounts/{account}/",
        "/api/accounts/{account}/folders/",
        "/api/folders/",
        "/api/threads/",
        "/api/threads/{thread}/",
        "/api/messages/",
        "/api/messages/{message}/?raw_headers=true",
        "/api/messages/{message}/raw/",
        "/api/changes/",
        "/api/schema/",
        "/api/docs/",
    ]
    for path in paths:
        answer = api.request("GET", path.format(**ids))
        check.attempts += 1
        if answer.status != 200:
            check.notes.append(f"{path}: {answer.status} (searched anyway)")
        canary = found_canary(answer.body)
        if canary:
            check.fail(f"{path} shows {canary[:13]}")
    admin = Http(base)
    admin.request("GET", "/admin/login/")
    login = admin.request(
        "POST",
        "/admin/login/?next=/admin/",
        form={
            "csrfmiddlewaretoken": admin.cookie("csrftoken"),
            "username": "root",
            "password": root_password,
        },
        headers={"Referer": base + "/admin/login/"},
    )
    if login.status != 302:
        check.fail(f"admin login as root failed: {login.status}")
    admin_paths = [
        "/admin/",
        "/admin/mailstore/account/",
        "/admin/mailstore/account/{account}/change/",
        "/admin/smtp_sync/imapsettings/",
        "/admin/smtp_sync/imapsettings/{account}/change/",
        "/admin/mailstore/message/",
        "/admin/mailstore/message/{message}/change/",
        "/admin/mailstore/syncrun/",
        "/admin/mailstore/deadletter/",
        "/admin/knox/authtoken/",
        "/admin/axes/accessattempt/",
        "/admin/auth/user/",
    ]
    for path in admin_paths:
        answer = admin.request("GET", path.format(**ids))
        check.attempts += 1
        if answer.status not in (200, 404):
            check.notes.append(f"{path}: {answer.status} (searched anyway)")
        canary = found_canary(answer.body)
        if canary:
            check.fail(f"{path} shows {canary[:13]}")
    return check


def canaries_in_stores(server_log: Path, settings) -> Check:
    check = Check("canary passwords in pg_dump, Redis, logs, media")
    # PostgreSQL
    pg_dump = shutil.which("pg_dump") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), reverse=True)), None
    )
    if pg_dump:
        dump = subprocess.run(
            [pg_dump, "--no-owner", os.environ["DATABASE_URL"]], capture_output=True, check=False
        )
        check.attempts += 1
        if dump.returncode != 0:
            check.fail(f"pg_dump failed: {dump.stderr[:200]!r}")
        elif found_canary(dump.stdout):
            check.fail(f"pg_dump holds {found_canary(dump.stdout)[:13]}")
    else:
        check.fail("pg_dump not found")
    # Redis: every key of every database
    import redis

    url = os.environ["REDIS_URL"]
    base_url = url.rsplit("/", 1)[0]
    for db in range(16):
        client = redis.Redis.from_url(f"{base_url}/{db}")
        try:
            keys = list(client.scan_iter(count=1000))
        except redis.ResponseError:
            break
        for key in keys:
            check.attempts += 1
            kind = client.type(key).decode()
            if kind == "string":
                values = [client.get(key) or b""]
            elif kind == "list":
                values = client.lrange(key, 0, -1)
            elif kind == "hash":
                values = [k + b"=" + v for k, v in client.hgetall(key).items()]
            elif kind == "set":
                values = list(client.smembers(key))
            elif kind == "zset":
                values = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            else:
                values = []
            blob = key + b"\n" + b"\n".join(values)
            if found_canary(blob):
                check.fail(f"redis db {db} key {key[:60]!r} holds {found_canary(blob)[:13]}")
    # The server's log (gunicorn + Django logging).
    check.attempts += 1
    log = server_log.read_bytes()
    if found_canary(log):
        line = next(li for li in log.splitlines() if found_canary(li))
        check.fail(f"server log: {line[:160]!r}")
    # Media (raw segments are compressed: the canary would only show uncompressed)
    for path in Path(settings.MEDIA_ROOT).rglob("*"):
        if path.is_file():
            check.attempts += 1
            if found_canary(path.read_bytes()):
                check.fail(f"media file {path.name}")
    return check


if __name__ == "__main__":
    sys.exit(main())
