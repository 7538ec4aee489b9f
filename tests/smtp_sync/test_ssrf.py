"""Server-side request forgery through account hosts (issue 12): the API, the admin and the sync
reach only what the outbound guard allows, and never show what a non-IMAP peer sent.

The suite allows its own loopback servers (tests/conftest.py); these tests narrow the allow list
to prove the refusals, with real sockets on loopback and tiny servers that record every peer.
"""

from __future__ import annotations

import socket
import time

import pytest
from rest_framework.test import APIClient

from emailplatform import netguard
from messages.models import Account
from smtp_sync.accounts import ImapAccountInput, ImapSettingsInput, imap_account_create
from smtp_sync.imap import ImapConnectError, ImapRefusedError
from smtp_sync.models import ImapSettings
from smtp_sync.sync import ImapAccountSync, server_for
from tests.conftest import token_client
from tests.imap_fixtures import TinyServer

pytestmark = pytest.mark.django_db(transaction=True)

BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3 internal-secret-42\r\n"


@pytest.fixture
def api(user) -> APIClient:
    return token_client(user)


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "sam", "sam@example.com", "pw-sam-123", is_staff=True
    )


@pytest.fixture
def nothing_allowed(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    return settings


def body(host: str, port: int = 993, security: str = "ssl", **settings) -> dict:
    return {
        "provider": "imap",
        "email_address": "victim@example.com",
        "password": "pw",
        "settings": {"imap_host": host, "imap_port": port, "imap_security": security, **settings},
    }


def settle(server: TinyServer) -> None:
    time.sleep(0.2)  # a connection, had one been made, is accepted by now


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "localhost", "::ffff:127.0.0.1"]
)
def test_loopback_in_every_spelling_is_refused_before_connecting(api, nothing_allowed, host):
    with TinyServer("127.0.0.1", greeting=BANNER) as server:
        response = api.post("/api/accounts/", body(host, server.port), format="json")
        settle(server)
        assert server.connections == 0
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["settings.imap_host"]
    assert "internal network" in error["fields"]["settings.imap_host"][0]
    assert not Account.objects.exists()


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_bracketed_ipv6_loopback_is_refused_before_connecting(api, nothing_allowed):
    with TinyServer("::1", greeting=BANNER) as server:
        response = api.post("/api/accounts/", body("[::1]", server.port), format="json")
        settle(server)
        assert server.connections == 0
    assert response.status_code == 400
    assert "settings.imap_host" in response.json()["error"]["fields"]


@pytest.mark.parametrize(
    "host",
    [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 (reaches this host)
        "[fd00::1]",
        "fe80::1",
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",
    ],
)
def test_private_and_reserved_ranges_are_refused_at_once(api, nothing_allowed, host):
    started = time.monotonic()
    response = api.post("/api/accounts/", body(host), format="json")
    assert time.monotonic() - started < 2, "refused before any connection attempt"
    assert response.status_code == 400
    [message] = response.json()["error"]["fields"]["settings.imap_host"]
    assert "not allowed" in message or "not a usable" in message


def test_a_name_resolving_to_an_internal_address_is_refused(api, nothing_allowed, monkeypatch):
    """A name is refused for where it points; the answer (an internal address) is not told."""
    calls = []

    def resolver(host, port):
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", port))]

    monkeypatch.setattr(netguard, "system_resolver", resolver)
    response = api.post("/api/accounts/", body("intranet.example.com"), format="json")
    assert response.status_code == 400
    message = response.json()["error"]["fields"]["settings.imap_host"][0]
    assert "intranet.example.com" in message and "10.20.30.40" not in message
    assert calls == ["intranet.example.com"]


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("a..b", "empty label"),
        ("a" * 64 + ".example.com", "1 to 63"),
        (".".join(["a" * 50] * 5), "at most 253"),
        ("-x.example.com", "hyphens"),
        ("[127.0.0.1]", "IPv6"),
        ("imap.example.com:993", "port"),
    ],
)
def test_bad_host_names_are_a_400_naming_the_field(api, host, why):
    response = api.post("/api/accounts/", body(host), format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "settings.imap_host" in error["message"]
    assert why in error["fields"]["settings.imap_host"][0]

    smtp = api.post("/api/accounts/", body("imap.example.com", smtp_host=host), format="json")
    assert smtp.status_code == 400
    assert list(smtp.json()["error"]["fields"]) == ["settings.smtp_host"]


def test_host_forms_accepted_and_normalized():
    for typed, stored in [
        ("[::1]", "::1"),
        ("[2001:db8::25]", "2001:db8::25"),
        ("Mail.Example.COM.", "mail.example.com"),
        ("Bücher.example", "xn--bcher-kva.example"),
    ]:
        serializer = ImapSettingsInput(data={"imap_host": typed, "smtp_host": typed})
        assert serializer.is_valid(), serializer.errors
        assert serializer.validated_data["imap_host"] == stored
        assert serializer.validated_data["smtp_host"] == stored


def test_a_banner_is_never_shown(api, settings, user):
    """An allow-listed port where another service speaks first: "not an IMAP server", and
    neither the API's error nor the account's last_error carries a byte of its banner."""
    with TinyServer("127.0.0.1", greeting=BANNER) as server:
        settings.OUTBOUND_ALLOWED_NETWORKS = [f"127.0.0.1:{server.port}"]
        response = api.post("/api/accounts/", body("127.0.0.1", server.port, "none"), format="json")
        assert server.connections == 1
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "connection_failed"
        assert "not an IMAP server" in error["message"]
        for secret in ("SSH", "OpenSSH", "internal-secret-42", "Debian"):
            assert secret not in response.content.decode()

        account = imap_account_create(
            owner=user,
            data=ImapAccountInput(
                email_address="banner@example.com",
                imap_host="127.0.0.1",
                imap_port=server.port,
                imap_security="none",
                password="pw",
            ),
            test_connection=False,
            start_sync=False,
        )
        with pytest.raises(ImapConnectError, match="not an IMAP server"):
            ImapAccountSync(account).sync(full=True)
        account.refresh_from_db()
        assert "not an IMAP server" in account.last_error
        shown = token_client(user).get(f"/api/accounts/{account.pk}/").json()["last_error"]
        assert "not an IMAP server" in shown
        for secret in ("SSH", "internal-secret-42"):
            assert secret not in account.last_error

        # Over TLS, the banner breaks the handshake: a TLS failure, again without the banner.
        tls = api.post("/api/accounts/", body("127.0.0.1", server.port, "ssl"), format="json")
        assert tls.status_code == 400
        assert "TLS" in tls.json()["error"]["message"]
        assert "SSH" not in tls.content.decode()


def test_a_silent_port_times_out_quickly(api, settings):
    settings.OUTBOUND_TEST_TIMEOUT_SECONDS = 1
    with TinyServer("127.0.0.1") as server:
        settings.OUTBOUND_ALLOWED_NETWORKS = [f"127.0.0.1:{server.port}"]
        started = time.monotonic()
        response = api.post("/api/accounts/", body("127.0.0.1", server.port, "none"), format="json")
        elapsed = time.monotonic() - started
    assert response.status_code == 400
    assert "no IMAP greeting" in response.json()["error"]["message"]
    assert elapsed < 5


def test_a_bye_greeting_is_an_imap_servers_words(api, settings):
    greeting = b"* BYE Too many connections from your IP\r\n"
    with TinyServer("127.0.0.1", greeting=greeting) as server:
        settings.OUTBOUND_ALLOWED_NETWORKS = [f"127.0.0.1:{server.port}"]
        response = api.post("/api/accounts/", body("127.0.0.1", server.port, "none"), format="json")
    assert "Too many connections" in response.json()["error"]["message"]


def test_plain_imap_only_to_allow_listed_hosts(api, nothing_allowed, staff, monkeypatch):
    """security none is refused for a public host and, even for staff, for an internal one not
    on the allow list: before connecting, naming settings.imap_security."""
    monkeypatch.setattr(
        netguard,
        "system_resolver",
        lambda host, port: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))],
    )
    response = api.post("/api/accounts/", body("imap.public.test", 143, "none"), format="json")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["settings.imap_security"]
    monkeypatch.undo()

    with TinyServer("127.0.0.1", greeting=b"* OK ready\r\n") as server:
        as_staff = token_client(staff).post(
            "/api/accounts/", body("127.0.0.1", server.port, "none"), format="json"
        )
        settle(server)
        assert server.connections == 0
    assert as_staff.status_code == 400
    assert list(as_staff.json()["error"]["fields"]) == ["settings.imap_security"]

    smtp = api.post(
        "/api/accounts/",
        body("127.0.0.1", smtp_host="127.0.0.1", smtp_security="none"),
        format="json",
    )
    assert smtp.status_code == 400


def test_an_allow_listed_dovecot_is_reached_in_plain_text(api, settings, imap_user):
    """The allow list is explicit: exactly the Dovecot's host:port, nothing else."""
    settings.OUTBOUND_ALLOWED_NETWORKS = [f"{imap_user.host}:{imap_user.port}"]
    created = api.post(
        "/api/accounts/",
        {
            **body(imap_user.host, imap_user.port, "none", username=imap_user.username),
            "password": imap_user.password,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    assert ImapSettings.objects.get(account_id=created.json()["id"]).allow_internal is False


def test_staff_may_reach_internal_hosts_and_the_account_keeps_that_rule(
    nothing_allowed, staff, user
):
    """Staff-typed internal hosts are connected (here a TLS failure: the guard let it through);
    the rule is stored on the account and its syncs apply it, while the same host typed by a
    non-staff user is refused at sync time without a connection."""
    with TinyServer("127.0.0.1", greeting=BANNER) as server:
        response = token_client(staff).post(
            "/api/accounts/", body("127.0.0.1", server.port, "ssl"), format="json"
        )
        assert server.connections == 1
        assert response.json()["error"]["code"] == "connection_failed"
        assert "TLS" in response.json()["error"]["message"]

        def account_of(owner, allow_internal):
            return imap_account_create(
                owner=owner,
                data=ImapAccountInput(
                    email_address=f"{owner.username}@example.com",
                    imap_host="127.0.0.1",
                    imap_port=server.port,
                    imap_security="ssl",
                    password="pw",
                    allow_internal=allow_internal,
                ),
                test_connection=False,
                start_sync=False,
            )

        staffs = account_of(staff, True)
        assert server_for(staffs).allow_internal
        with pytest.raises(ImapConnectError, match="TLS"):
            ImapAccountSync(staffs).sync()
        assert server.connections == 2

        users = account_of(user, False)
        with pytest.raises(ImapRefusedError):
            ImapAccountSync(users).sync()
        settle(server)
        assert server.connections == 2


def test_staff_are_held_to_the_allow_list_when_the_setting_is_off(nothing_allowed, staff):
    nothing_allowed.OUTBOUND_STAFF_ALLOW_INTERNAL = False
    with TinyServer("127.0.0.1", greeting=BANNER) as server:
        response = token_client(staff).post(
            "/api/accounts/", body("127.0.0.1", server.port, "ssl"), format="json"
        )
        settle(server)
        assert server.connections == 0
    assert "settings.imap_host" in response.json()["error"]["fields"]


def test_dns_rebinding_is_refused_at_sync_time_and_shown_on_the_account(
    api, settings, user, imap_user, monkeypatch
):
    """Created while the name pointed at the allowed server (resolved once per connection),
    then the name moves to an internal address: the sync refuses it before connecting and the
    account says why."""
    answers = ["127.0.0.1"]
    calls = []

    def resolver(host, port):
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[0], port))]

    monkeypatch.setattr(netguard, "system_resolver", resolver)
    settings.OUTBOUND_ALLOWED_NETWORKS = [f"127.0.0.1:{imap_user.port}"]
    created = api.post(
        "/api/accounts/",
        {
            **body("mail.rebind.test", imap_user.port, "none", username=imap_user.username),
            "password": imap_user.password,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    assert calls == ["mail.rebind.test"], "one resolution for one connection test"
    account = Account.objects.get(pk=created.json()["id"])
    ImapAccountSync(account).sync(full=True)
    assert len(calls) == 2

    answers[0] = "10.0.0.7"
    with pytest.raises(ImapRefusedError):
        ImapAccountSync(account).sync()
    shown = api.get(f"/api/accounts/{account.pk}/").json()
    assert "internal network addresses are not allowed" in shown["last_error"]
    assert "10.0.0.7" not in shown["last_error"]
    test = api.post(f"/api/accounts/{account.pk}/test-connection/")
    assert test.status_code == 400
    assert "internal network" in test.json()["error"]["message"]


def test_the_admin_checks_hosts_with_the_staff_rule(client, nothing_allowed, django_user_model):
    from django.urls import reverse

    nothing_allowed.OUTBOUND_STAFF_ALLOW_INTERNAL = False
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")
    client.force_login(admin)
    with TinyServer("127.0.0.1", greeting=BANNER) as server:
        form = {
            "owner": admin.pk,
            "email_address": "new@example.com",
            "imap_host": "2130706433",
            "imap_port": server.port,
            "imap_security": "ssl",
            "username": "u",
            "password": "pw",
            "smtp_port": 465,
            "smtp_security": "ssl",
        }
        page = client.post(reverse("admin:smtp_sync_imapsettings_add"), form)
        settle(server)
        assert server.connections == 0
    assert page.status_code == 200
    assert "internal network addresses are not allowed" in page.content.decode()
    bad = client.post(reverse("admin:smtp_sync_imapsettings_add"), {**form, "imap_host": "a..b"})
    assert "empty label" in bad.content.decode()
    assert not Account.objects.filter(email_address="new@example.com").exists()

    account = imap_account_create(
        owner=admin,
        data=ImapAccountInput(
            email_address="kept@example.com", imap_host="imap.example.com", password="pw"
        ),
        test_connection=False,
        start_sync=False,
    )
    url = reverse("admin:smtp_sync_imapsettings_change", args=[account.pk])
    assert "may reach internal addresses" in client.get(url).content.decode().lower()
    change = {
        "imap_host": "10.1.2.3",
        "imap_port": 993,
        "imap_security": "ssl",
        "username": "u",
        "smtp_port": 465,
        "smtp_security": "ssl",
    }
    refused = client.post(url, change)
    assert refused.status_code == 200
    assert "internal network addresses are not allowed" in refused.content.decode()
    assert ImapSettings.objects.get(account=account).imap_host == "imap.example.com"


def test_add_account_refuses_internal_hosts_unless_told(nothing_allowed, user, monkeypatch):
    from django.core.management import CommandError, call_command

    monkeypatch.setenv("SSRF_TEST_PASSWORD", "pw")
    args = ["add_account", "--owner", user.username, "--email", "cli@example.com"]
    args += ["--security", "ssl", "--password-env", "SSRF_TEST_PASSWORD", "--no-sync"]
    with TinyServer("127.0.0.1", greeting=BANNER) as server:
        port = ["--imap-port", str(server.port)]
        with pytest.raises(CommandError, match="--imap-host: 0x7f000001: connections to internal"):
            call_command(*args, *port, "--imap-host", "0x7f000001")
        with pytest.raises(CommandError, match="--imap-host: A host name cannot have an empty"):
            call_command(*args, *port, "--imap-host", "a..b")
        settle(server)
        assert server.connections == 0
        call_command(*args, *port, "--imap-host", "127.0.0.1", "--allow-internal", "--no-test")
    stored = ImapSettings.objects.get(account__email_address="cli@example.com")
    assert stored.allow_internal and stored.imap_host == "127.0.0.1"


def test_seed_demo_needs_its_dovecot_on_the_allow_list(settings, dovecot, django_user_model):
    from django.core.management import CommandError, call_command

    host, port, _ = dovecot
    django_user_model.objects.create_superuser("admin", "admin@localhost", "pw-admin-1")
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    with pytest.raises(CommandError, match="OUTBOUND_ALLOWED_NETWORKS"):
        call_command("seed_demo")
    settings.OUTBOUND_ALLOWED_NETWORKS = [f"{host}:{port}"]  # what scripts/devservices.py sets
    call_command("seed_demo")
    account = Account.objects.get(email_address="demo@example.com")
    assert account.imap_settings.imap_security == "none"
    assert not account.imap_settings.allow_internal
