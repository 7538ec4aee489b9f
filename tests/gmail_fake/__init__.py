"""A local Gmail API server for the tests: see README.md in this directory."""

from tests.gmail_fake.server import GmailFake

__all__ = ["GmailFake"]
