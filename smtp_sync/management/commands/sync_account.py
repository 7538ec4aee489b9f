"""Run an IMAP sync in the foreground: the same service the Celery tasks call."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from messages.models import Account
from smtp_sync.imap import ImapError
from smtp_sync.services import imap_sync_account


class Command(BaseCommand):
    help = "Sync an IMAP account now (incremental, or --full), with a progress bar."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("address")
        parser.add_argument("--full", action="store_true")
        parser.add_argument("--owner", help="username, when several users have this address")

    def handle(self, *args, **options) -> None:
        accounts = Account.objects.filter(
            email_address__iexact=options["address"], provider=Account.Provider.IMAP
        )
        if options["owner"]:
            accounts = accounts.filter(owner__username=options["owner"])
        found = list(accounts[:2])
        if not found:
            raise CommandError(f"no IMAP account {options['address']!r}")
        if len(found) > 1:
            raise CommandError("several users have this address: pass --owner")
        bar = tqdm(unit="msg", desc=found[0].email_address, disable=None, file=self.stderr)

        def progress(done: int, total: int) -> None:
            bar.total = total or None
            bar.n = done
            bar.refresh()

        try:
            report = imap_sync_account(found[0].pk, full=options["full"], progress=progress)
        except ImapError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        if report is None:
            raise CommandError("another sync of this account is running; it will pick this up")
        self.stdout.write(report.summary())
