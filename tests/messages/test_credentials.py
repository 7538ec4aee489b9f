"""Credentials are encrypted at rest and survive key rotation."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from messages.crypto import CredentialsError
from messages.models import Account

pytestmark = pytest.mark.django_db

SECRET = "correct horse battery staple"


def stored_bytes(account: Account) -> bytes:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT credentials_encrypted FROM mailstore_account WHERE id = %s", [account.pk]
        )
        return bytes(cursor.fetchone()[0])


def test_password_is_not_in_the_database_in_clear(account):
    account.set_credentials({"password": SECRET})
    account.save()
    assert SECRET.encode() not in stored_bytes(account)
    assert Account.objects.get(pk=account.pk).get_credentials() == {"password": SECRET}


def test_rotation_keeps_old_tokens_readable_then_reencrypts(account, settings):
    old_key = settings.CREDENTIALS_KEYS[0]
    account.set_credentials({"password": SECRET})
    account.save()
    new_key = Fernet.generate_key().decode()
    settings.CREDENTIALS_KEYS = [new_key, old_key]
    assert Account.objects.get(pk=account.pk).get_credentials()["password"] == SECRET

    out = io.StringIO()
    call_command("rotate_credentials", stdout=out)
    assert "1 account" in out.getvalue()
    settings.CREDENTIALS_KEYS = [new_key]
    assert Account.objects.get(pk=account.pk).get_credentials()["password"] == SECRET


def test_wrong_key_is_a_clear_error(account, settings):
    account.set_credentials({"password": SECRET})
    account.save()
    settings.CREDENTIALS_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CredentialsError, match="do not decrypt"):
        Account.objects.get(pk=account.pk).get_credentials()
