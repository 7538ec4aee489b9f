"""Add an IMAP/SMTP account. The password is read from a prompt, stdin or an environment
variable, never from the command line (where `ps` would show it)."""

from __future__ import annotations

import getpass
import os
import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from smtp_sync.accounts import ImapAccountInput, ServerSettingRefused, imap_account_create
from smtp_sync.imap import ImapError


class Command(BaseCommand):
    help = "Add an IMAP account (connection tested first), then start its full sync."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--owner", required=True, help="username of the account's owner")
        parser.add_argument("--email", required=True)
        parser.add_argument("--imap-host", required=True)
        parser.add_argument("--imap-port", type=int)
        parser.add_argument("--security", choices=["ssl", "starttls", "none"], default="ssl")
        parser.add_argument("--username", help="login name (default: the address)")
        parser.add_argument("--password-stdin", action="store_true")
        parser.add_argument(
            "--password-env", metavar="VAR", help="read the password from this env variable"
        )
        parser.add_argument("--smtp-host", default="")
        parser.add_argument("--smtp-port", type=int, default=465)
        parser.add_argument("--smtp-security", choices=["ssl", "starttls", "none"], default="ssl")
        parser.add_argument("--no-test", action="store_true", help="skip the connection test")
        parser.add_argument("--no-sync", action="store_true", help="do not start a full sync")
        parser.add_argument(
            "--allow-internal",
            action="store_true",
            help=(
                "let this account reach internal addresses (loopback, private ranges) now and "
                "in its syncs; without it only public addresses and OUTBOUND_ALLOWED_NETWORKS. "
                "Plain IMAP (--security none) needs the host on OUTBOUND_ALLOWED_NETWORKS."
            ),
        )

    def handle(self, *args, **options) -> None:
        owner = get_user_model().objects.filter(username=options["owner"]).first()
        if owner is None:
            raise CommandError(f"no user named {options['owner']!r}")
        if options["password_stdin"]:
            password = sys.stdin.readline().rstrip("\n")
        elif options["password_env"]:
            password = os.environ.get(options["password_env"], "")
            if not password:
                raise CommandError(f"environment variable {options['password_env']} is empty")
        else:
            password = getpass.getpass(f"IMAP password for {options['email']}: ")
        default_port = {"ssl": 993, "starttls": 143, "none": 143}[options["security"]]
        data = ImapAccountInput(
            email_address=options["email"],
            imap_host=options["imap_host"],
            imap_port=options["imap_port"] or default_port,
            imap_security=options["security"],
            username=options["username"] or "",
            password=password,
            smtp_host=options["smtp_host"],
            smtp_port=options["smtp_port"],
            smtp_security=options["smtp_security"],
            allow_internal=options["allow_internal"],
        )
        try:
            account = imap_account_create(
                owner=owner,
                data=data,
                test_connection=not options["no_test"],
                start_sync=not options["no_sync"],
            )
        except ServerSettingRefused as exc:
            option = "--" + exc.field.replace("_", "-").replace("imap-security", "security")
            raise CommandError(f"{option}: {exc}") from exc
        except ImapError as exc:
            raise CommandError(f"connection test failed: {exc}") from exc
        self.stdout.write(f"Added account {account.email_address} (id {account.pk}).")
