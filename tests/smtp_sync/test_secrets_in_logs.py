"""Credentials never reach a log line, at any level, on success or failure."""

import logging

import pytest

from smtp_sync.accounts import imap_connection_test
from smtp_sync.imap import ImapAuthError, ImapServer
from smtp_sync.sync import ImapAccountSync
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db(transaction=True)


def test_passwords_stay_out_of_debug_logs(imap_account, imap_user, caplog):
    caplog.set_level(logging.DEBUG)
    imap_user.append("INBOX", make_mail("logged", message_id="<logged@x>"))
    ImapAccountSync(imap_account).sync()
    wrong = "wrong-" + imap_user.password
    with pytest.raises(ImapAuthError):
        imap_connection_test(
            ImapServer(imap_user.host, imap_user.port, "none", imap_user.username, wrong)
        )
    text = caplog.text
    assert "LOGIN" in text.upper() or "login" in text, "the IMAP conversation was logged"
    assert imap_user.password not in text
    assert wrong not in text
