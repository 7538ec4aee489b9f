"""Add an account of any provider that offers it (`--provider`, default imap): the common
options here, each provider's own from its adapter's `command` (messages.providers)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from messages import providers


def _commands() -> dict[str, providers.ProviderCommand]:
    found = {}
    for name in providers.provider_names():
        command = getattr(providers.get_adapter(name), "command", None)
        if command is not None:
            found[name] = command
    return found


class Command(BaseCommand):
    help = (
        "Add an account (its connection tested first), then start its full sync. "
        "Secrets are read from a prompt, stdin or an environment variable, never from the "
        "command line (where `ps` would show them)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        commands = _commands()
        parser.add_argument("--provider", choices=sorted(commands), default="imap")
        parser.add_argument("--owner", required=True, help="username of the account's owner")
        parser.add_argument("--no-sync", action="store_true", help="do not start a sync")
        for name, command in commands.items():
            command.add_arguments(parser.add_argument_group(f"--provider {name}"))

    def handle(self, *args, **options) -> None:
        owner = get_user_model().objects.filter(username=options["owner"]).first()
        if owner is None:
            raise CommandError(f"no user named {options['owner']!r}")
        account = _commands()[options["provider"]].handle(owner, options)
        self.stdout.write(f"Added account {account.email_address} (id {account.pk}).")
