"""The SMTP adapter against aiosmtpd servers that misbehave on purpose (tests/smtp_fake.py)."""

from __future__ import annotations

import time

import pytest

from smtp_sync.smtp_transport import (
    SmtpAuthError,
    SmtpError,
    SmtpOutcomeUnknown,
    SmtpPermanentError,
    SmtpSession,
    SmtpTransientError,
    smtp_endpoint_for,
)
from tests.smtp_fake import SmtpBehaviour, free_port

FROM = "alice@example.com"
BOB = "bob@example.net"
CAROL = "carol@example.net"


def message(subject: str = "Hello", body: str = "Hi Bob,\r\n.a line starting with a dot\r\n"):
    return (
        f"From: Alice <{FROM}>\r\nTo: {BOB}\r\nSubject: {subject}\r\n"
        f"Message-ID: <m1@example.com>\r\n\r\n{body}"
    ).encode()


def send_one(endpoint, recipients=(BOB,), raw=None, **kwargs):
    with SmtpSession(endpoint) as session:
        return session.send(FROM, list(recipients), raw or message(), **kwargs)


def test_a_message_reaches_the_server_as_written(smtp_server):
    server = smtp_server()
    outcome = send_one(server.endpoint(), [BOB, CAROL])

    assert [(r.address, r.accepted, r.code) for r in outcome.recipients] == [
        (BOB, True, 250),
        (CAROL, True, 250),
    ]
    assert "queued as M1" in outcome.recipients[0].reply
    [received] = server.messages
    assert (received.mail_from, received.rcpt_tos) == (FROM, [BOB, CAROL])
    assert received.data == message()  # the dot-stuffing undone by the server: bytes intact
    assert received.mail_param("SIZE") == str(len(message()))
    assert received.mail_param("BODY") is None  # 7-bit message


def test_bare_line_ends_are_sent_as_crlf(smtp_server):
    server = smtp_server()
    send_one(server.endpoint(), raw=b"Subject: x\nFrom: a@example.com\n\nline\rother\n")

    assert server.messages[0].data == b"Subject: x\r\nFrom: a@example.com\r\n\r\nline\r\nother\r\n"


def test_one_connection_carries_a_burst_and_ends_with_quit(smtp_server):
    server = smtp_server()
    with SmtpSession(server.endpoint()) as session:
        for n in range(3):
            session.send(FROM, [BOB], message(f"n{n}"))

    assert [m.connection for m in server.messages] == [1, 1, 1]
    assert server.connections == 1
    assert server.handler.quits == 1


def test_a_connection_dropped_between_messages_is_made_again(smtp_server):
    server = smtp_server()
    with SmtpSession(server.endpoint()) as session:
        session.send(FROM, [BOB], message("first"))
        server.drop_connections()
        time.sleep(0.1)
        outcome = session.send(FROM, [BOB], message("second"))

    assert outcome.recipients[0].accepted
    assert [m.connection for m in server.messages] == [1, 2]
    assert session.connections == 2


def test_a_4xx_at_the_end_of_data_is_retryable_and_the_retry_delivers_one_copy(smtp_server):
    server = smtp_server(SmtpBehaviour(data_replies=["451 4.3.0 Try again later"]))
    endpoint = server.endpoint()

    with pytest.raises(SmtpTransientError) as refused:
        send_one(endpoint)
    assert refused.value.code == 451
    assert "451 4.3.0 Try again later" in refused.value.message
    assert server.messages == []

    send_one(endpoint)  # the caller's retry
    assert len(server.messages) == 1


def test_a_5xx_for_one_of_two_recipients_the_other_still_gets_it(smtp_server):
    server = smtp_server(SmtpBehaviour(rcpt_replies={CAROL: "550 5.1.1 <carol>: no such user"}))
    outcome = send_one(server.endpoint(), [BOB, CAROL])

    bob, carol = outcome.recipients
    assert (bob.accepted, bob.code) == (True, 250)
    assert (carol.accepted, carol.code, carol.temporary) == (False, 550, False)
    assert carol.reply == "5.1.1 <carol>: no such user"
    assert [m.rcpt_tos for m in server.messages] == [[BOB]]


def test_a_4xx_for_one_recipient_is_reported_as_temporary(smtp_server):
    server = smtp_server(SmtpBehaviour(rcpt_replies={CAROL: "450 4.2.1 mailbox busy"}))
    outcome = send_one(server.endpoint(), [BOB, CAROL])

    assert [(r.address, r.accepted, r.temporary) for r in outcome.recipients] == [
        (BOB, True, False),
        (CAROL, False, True),
    ]


def test_every_recipient_refused_is_permanent_and_the_session_stays_usable(smtp_server):
    server = smtp_server(SmtpBehaviour(rcpt_replies={BOB: "550 5.1.1 no", CAROL: "550 5.1.1 no"}))
    with SmtpSession(server.endpoint()) as session:
        with pytest.raises(SmtpPermanentError) as refused:
            session.send(FROM, [BOB, CAROL], message())
        assert [r.code for r in refused.value.outcome.recipients] == [550, 550]
        session.send(FROM, ["dave@example.net"], message())

    assert [m.rcpt_tos for m in server.messages] == [["dave@example.net"]]
    assert server.connections == 1


def test_every_recipient_refused_with_one_for_now_is_retryable(smtp_server):
    server = smtp_server(
        SmtpBehaviour(rcpt_replies={BOB: "550 5.1.1 no", CAROL: "451 4.4.0 later"})
    )
    with pytest.raises(SmtpTransientError) as refused:
        send_one(server.endpoint(), [BOB, CAROL])
    assert [r.temporary for r in refused.value.outcome.recipients] == [False, True]


def test_a_5xx_at_mail_from_fails_at_once(smtp_server):
    server = smtp_server(SmtpBehaviour(mail_replies="553 5.7.1 sender not allowed"))
    with pytest.raises(SmtpPermanentError, match="553 5.7.1 sender not allowed"):
        send_one(server.endpoint())
    assert server.messages == []


def test_a_peer_answering_garbage_is_a_readable_retryable_failure(raw_smtp_peer, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1"]
    peer = raw_smtp_peer(b"HTTP/1.1 400 Bad Request\r\nX-Secret-Banner: internal\r\n\r\n")
    endpoint = _endpoint(peer.host, peer.port, timeout=2)

    with pytest.raises(SmtpTransientError) as failed:
        send_one(endpoint)
    assert failed.value.message == f"127.0.0.1:{peer.port} did not answer like an SMTP server"


def test_a_garbage_reply_during_the_transaction_is_retryable(smtp_server):
    server = smtp_server(SmtpBehaviour(mail_replies=["what is this"]))
    with pytest.raises(SmtpTransientError, match="unreadable reply to MAIL"):
        send_one(server.endpoint())
    send_one(server.endpoint())
    assert len(server.messages) == 1


def test_a_silent_peer_times_out_quickly_with_a_reason(raw_smtp_peer, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1"]
    peer = raw_smtp_peer(b"")
    started = time.monotonic()
    with pytest.raises(SmtpTransientError) as failed:
        send_one(_endpoint(peer.host, peer.port, timeout=0.5))
    assert time.monotonic() - started < 3
    assert "no answer from" in failed.value.message
    assert "within 0.5 s" in failed.value.message


def test_a_server_hanging_before_the_data_is_retryable(smtp_server):
    server = smtp_server(SmtpBehaviour(hang_at="RCPT"))
    started = time.monotonic()
    with pytest.raises(SmtpTransientError, match="no reply from .* to RCPT within 0.5 s"):
        send_one(server.endpoint(timeout=0.5))
    assert time.monotonic() - started < 3


def test_a_server_hanging_after_the_data_leaves_the_outcome_unknown(smtp_server):
    server = smtp_server(SmtpBehaviour(after_data="hang"))
    started = time.monotonic()
    with pytest.raises(SmtpOutcomeUnknown) as unknown:
        send_one(server.endpoint(timeout=0.5))
    assert time.monotonic() - started < 3
    assert "no reply within 0.5 s" in unknown.value.message
    assert "may have been delivered" in unknown.value.message


def test_a_cut_after_the_data_leaves_the_outcome_unknown(smtp_server):
    server = smtp_server(SmtpBehaviour(after_data="cut"))
    with pytest.raises(SmtpOutcomeUnknown, match="connection was cut"):
        send_one(server.endpoint())
    assert len(server.messages) == 1  # the server did get it: a blind resend would duplicate


def test_a_closed_port_is_retryable(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1"]
    with pytest.raises(SmtpTransientError, match="refused"):
        send_one(_endpoint("127.0.0.1", free_port()))


def test_the_guard_refuses_plain_smtp_to_a_host_not_allowed(smtp_server, settings):
    server = smtp_server()
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    with pytest.raises(SmtpPermanentError, match="internal network"):
        send_one(server.endpoint(security="starttls"))
    with pytest.raises(SmtpPermanentError, match="unencrypted connection"):
        send_one(server.endpoint(allow_internal=True))
    assert server.connections == 0


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_with_a_password(smtp_server, mechanism):
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    server = smtp_server(users={"alice": "s3cret-pw"}, exclude_auth=(other, "XOAUTH2"))
    send_one(server.endpoint(username="alice", password="s3cret-pw"))

    assert server.auth_attempts == [(mechanism, "alice", True)]
    assert server.messages[0].login == "alice"


def test_a_refused_password_is_an_auth_error_that_never_shows_it(smtp_server):
    server = smtp_server(SmtpBehaviour(echo_secret_on_auth_failure=True), users={"alice": "x"})
    with pytest.raises(SmtpAuthError) as refused:
        send_one(server.endpoint(username="alice", password="wrong-pw-123"))

    assert refused.value.code == 535
    assert "login refused by" in refused.value.message
    assert "wrong-pw-123" not in refused.value.message
    assert "wrong-pw-123" not in repr(server.endpoint(password="wrong-pw-123"))
    assert server.messages == []


def test_xoauth2(smtp_server):
    server = smtp_server(users={"alice@example.com": "ya29.token"})
    send_one(server.endpoint(username="alice@example.com", oauth2_token="ya29.token"))

    assert server.auth_attempts == [("XOAUTH2", "alice@example.com", True)]
    with pytest.raises(SmtpAuthError) as refused:
        send_one(server.endpoint(username="alice@example.com", oauth2_token="ya29.expired"))
    assert "ya29.expired" not in refused.value.message
    assert len(server.messages) == 1


def test_starttls_with_a_self_signed_certificate_is_refused_unless_trusted(smtp_server):
    server = smtp_server(tls=True)

    with pytest.raises(SmtpTransientError) as refused:
        send_one(server.endpoint(verify_certificate=True))
    assert "certificate" in refused.value.message
    assert "self-signed" in refused.value.message
    assert server.messages == []

    send_one(server.endpoint(verify_certificate=False))
    assert server.messages[0].tls


def test_implicit_tls(smtp_server):
    server = smtp_server(implicit_tls=True, users={"alice": "pw"})
    with pytest.raises(SmtpTransientError, match="certificate"):
        send_one(server.endpoint(verify_certificate=True))
    send_one(server.endpoint(username="alice", password="pw"))
    assert server.messages[0].tls


def test_starttls_required_but_not_offered(smtp_server):
    server = smtp_server()
    with pytest.raises(SmtpPermanentError, match="does not offer STARTTLS"):
        send_one(server.endpoint(security="starttls"))


def test_starttls_refused_by_the_server(smtp_server):
    server = smtp_server(SmtpBehaviour(starttls_reply="454 4.7.0 TLS not available"), tls=True)
    with pytest.raises(SmtpTransientError, match="refused STARTTLS: 454 4.7.0 TLS not available"):
        send_one(server.endpoint())
    assert server.messages == []


def test_dsn_parameters_reach_the_server(smtp_server):
    server = smtp_server()
    send_one(server.endpoint(), [BOB, "odd+tag=x@example.net"], envid="env+1=2")

    [received] = server.messages
    assert received.mail_param("RET") == "HDRS"
    assert received.mail_param("ENVID") == "env+2B1+3D2"
    assert received.rcpt_param(BOB, "NOTIFY") == "FAILURE,DELAY"
    assert received.rcpt_param(BOB, "ORCPT") == f"rfc822;{BOB}"
    assert received.rcpt_param("odd+tag=x@example.net", "ORCPT") == (
        "rfc822;odd+2Btag+3Dx@example.net"
    )


def test_notify_success_when_asked(smtp_server):
    server = smtp_server()
    send_one(server.endpoint(), envid="e1", notify=("SUCCESS", "FAILURE"), ret="FULL")
    assert server.messages[0].rcpt_param(BOB, "NOTIFY") == "SUCCESS,FAILURE"
    assert server.messages[0].mail_param("RET") == "FULL"


def test_no_dsn_parameters_to_a_server_without_dsn(smtp_server):
    server = smtp_server(SmtpBehaviour(dsn=False))
    send_one(server.endpoint(), envid="e1")

    [received] = server.messages
    assert received.mail_param("ENVID") is None
    assert received.rcpt_options == [[]]


def test_smtputf8_for_a_non_ascii_address(smtp_server):
    server = smtp_server()
    send_one(server.endpoint(), ["josé@exämple.net"])

    [received] = server.messages
    assert received.rcpt_tos == ["josé@exämple.net"]
    assert received.smtp_utf8
    assert received.mail_param("SMTPUTF8") == ""


def test_a_non_ascii_address_is_refused_before_sending_without_smtputf8(smtp_server):
    server = smtp_server(SmtpBehaviour(smtputf8=False))
    with pytest.raises(SmtpPermanentError, match="SMTPUTF8"):
        send_one(server.endpoint(), ["josé@exämple.net"])
    assert server.handler.mail_commands == 0


def test_an_8bit_body_is_sent_as_8bitmime(smtp_server):
    server = smtp_server()
    raw = "Subject: x\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n".encode()
    send_one(server.endpoint(), raw=raw)

    assert server.messages[0].mail_param("BODY") == "8BITMIME"
    assert server.messages[0].data == raw


def test_an_8bit_message_is_refused_before_mail_by_a_7bit_server(smtp_server):
    server = smtp_server(SmtpBehaviour(hidden_extensions=("8BITMIME",)))
    raw = "Subject: x\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n".encode()
    with pytest.raises(SmtpPermanentError, match="8BITMIME"):
        send_one(server.endpoint(), raw=raw)
    assert server.handler.mail_commands == 0
    send_one(server.endpoint())  # a 7-bit one goes
    assert server.messages[0].mail_param("BODY") is None


def test_a_message_over_the_servers_size_limit_is_refused_before_mail(smtp_server):
    server = smtp_server(SmtpBehaviour(size_limit=1000))
    with pytest.raises(SmtpPermanentError, match="larger than"):
        send_one(server.endpoint(), raw=message(body="x" * 2000))
    assert server.handler.mail_commands == 0


@pytest.mark.parametrize("address", ["bob@example.net\r\nRCPT TO:<eve@example.net>", "bob", ""])
def test_an_invalid_envelope_address_is_refused_before_connecting(smtp_server, address):
    server = smtp_server()
    session = SmtpSession(server.endpoint())
    with pytest.raises(SmtpPermanentError, match="not a valid envelope address"):
        session.send(FROM, [address], message())
    assert server.handler.mail_commands == 0


def test_errors_carry_a_readable_message(smtp_server):
    server = smtp_server(SmtpBehaviour(mail_replies="421 4.3.2 shutting down"))
    with pytest.raises(SmtpError) as failed:
        send_one(server.endpoint())
    assert isinstance(failed.value, SmtpTransientError)
    assert str(failed.value) == failed.value.message


@pytest.mark.django_db
def test_the_endpoint_of_an_account(user):
    from messages.models import Account
    from smtp_sync.models import ImapSettings

    account = Account(owner=user, provider=Account.Provider.IMAP, email_address="a@example.com")
    account.set_credentials({"password": "pw-1"})
    account.save()
    settings = ImapSettings.objects.create(
        account=account,
        imap_host="imap.example.com",
        username="alice-imap",
        smtp_host="smtp.example.com",
        smtp_port=587,
        smtp_security="starttls",
    )

    endpoint = smtp_endpoint_for(account)
    assert repr(endpoint).count("pw-1") == 0
    assert (endpoint.host, endpoint.port, endpoint.security) == (
        "smtp.example.com",
        587,
        "starttls",
    )
    assert (endpoint.username, endpoint.password, endpoint.oauth2_token) == (
        "alice-imap",
        "pw-1",
        "",
    )
    assert endpoint.verify_certificate and not endpoint.allow_internal

    settings.smtp_username = "alice-smtp"
    settings.smtp_trust_self_signed = True
    settings.save()
    account.refresh_from_db()
    endpoint = smtp_endpoint_for(account)
    assert (endpoint.username, endpoint.verify_certificate) == ("alice-smtp", False)


def _endpoint(host, port, **kwargs):
    from smtp_sync.smtp_transport import SmtpEndpoint

    return SmtpEndpoint(host=host, port=port, security="none", **{"timeout": 5.0, **kwargs})


@pytest.mark.django_db
def test_an_account_sends_through_its_stored_settings(user, smtp_server):
    from messages.models import Account
    from smtp_sync.models import ImapSettings

    server = smtp_server(tls=True, users={"alice-imap": "pw-1"})
    account = Account(owner=user, provider=Account.Provider.IMAP, email_address=FROM)
    account.set_credentials({"password": "pw-1"})
    account.save()
    ImapSettings.objects.create(
        account=account, imap_host="imap.example.com", username="alice-imap"
    )
    ImapSettings.objects.filter(account=account).update(**server.account_settings())

    send_one(smtp_endpoint_for(Account.objects.get(pk=account.pk)))
    assert [(m.login, m.tls) for m in server.messages] == [("alice-imap", True)]
