"""Re-encrypt every account's stored credentials under the newest key in CREDENTIALS_KEYS."""

from django.core.management.base import BaseCommand
from django.db import transaction

from messages.crypto import rotate
from messages.models import Account


class Command(BaseCommand):
    help = "Re-encrypt stored credentials with the first key of CREDENTIALS_KEYS."

    def handle(self, *args, **options) -> None:
        rotated = 0
        with transaction.atomic():
            accounts = Account.objects.select_for_update().exclude(credentials_encrypted=b"")
            for account in accounts.only("id", "credentials_encrypted"):
                account.credentials_encrypted = rotate(bytes(account.credentials_encrypted))
                account.save(update_fields=["credentials_encrypted"])
                rotated += 1
        self.stdout.write(f"Re-encrypted the credentials of {rotated} account(s).")
