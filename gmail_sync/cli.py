"""The Gmail part of `manage.py add_account --provider gmail`: an operator holding a refresh
token of the platform's OAuth client (from Google's OAuth playground or an earlier consent)
connects it; the address comes from Google. Connecting an address the owner already has
reconnects that account. The token is read from stdin, an environment variable or a prompt,
never from the command line."""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import CommandError

from messages.models import Account

from .accounts import GmailConnectError, gmail_account_connect


class GmailCommand:
    def add_arguments(self, group: Any) -> None:
        group.add_argument("--refresh-token-stdin", action="store_true")
        group.add_argument(
            "--refresh-token-env", metavar="VAR", help="read the refresh token from this variable"
        )

    def handle(self, owner: AbstractBaseUser, options: dict[str, Any]) -> Account:
        if options["refresh_token_stdin"]:
            token = sys.stdin.readline().strip()
        elif options["refresh_token_env"]:
            token = os.environ.get(options["refresh_token_env"], "").strip()
            if not token:
                raise CommandError(f"environment variable {options['refresh_token_env']} is empty")
        else:
            token = getpass.getpass("Gmail refresh token: ").strip()
        try:
            connected = gmail_account_connect(
                owner=owner, refresh_token=token, start_sync=not options["no_sync"]
            )
        except GmailConnectError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        return connected.account
