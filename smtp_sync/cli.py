"""The IMAP part of `manage.py add_account` (messages/management/commands/add_account.py).
The password is read from a prompt, stdin or an environment variable, never from the command
line (where `ps` would show it)."""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import CommandError

from messages.models import Account

from .accounts import ImapAccountInput, ServerSettingRefused, imap_account_create
from .imap import ImapError


class ImapCommand:
    def add_arguments(self, group: Any) -> None:
        group.add_argument("--email", help="the account's address (required)")
        group.add_argument("--imap-host", help="required")
        group.add_argument("--imap-port", type=int)
        group.add_argument("--security", choices=["ssl", "starttls", "none"], default="ssl")
        group.add_argument("--username", help="login name (default: the address)")
        group.add_argument("--password-stdin", action="store_true")
        group.add_argument(
            "--password-env", metavar="VAR", help="read the password from this env variable"
        )
        group.add_argument("--smtp-host", default="")
        group.add_argument("--smtp-port", type=int, default=465)
        group.add_argument("--smtp-security", choices=["ssl", "starttls", "none"], default="ssl")
        group.add_argument("--no-test", action="store_true", help="skip the connection test")
        group.add_argument(
            "--allow-internal",
            action="store_true",
            help=(
                "let this account reach internal addresses (loopback, private ranges) now and "
                "in its syncs; without it only public addresses and OUTBOUND_ALLOWED_NETWORKS. "
                "Plain IMAP (--security none) needs the host on OUTBOUND_ALLOWED_NETWORKS."
            ),
        )

    def handle(self, owner: AbstractBaseUser, options: dict[str, Any]) -> Account:
        for required in ("email", "imap_host"):
            if not options.get(required):
                raise CommandError(f"--{required.replace('_', '-')} is required for imap accounts")
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
            return imap_account_create(
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
