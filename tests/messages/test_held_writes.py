"""messages.held_writes: held statements run where they would have, one round trip later."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from messages.held_writes import hold, writes_held
from messages.models import Thread
from tests.sql_sent import statements_sent

pytestmark = pytest.mark.django_db


def test_a_held_write_travels_with_the_next_statement_and_is_seen_by_it(account):
    thread = Thread.objects.create(account=account)
    with transaction.atomic(), writes_held(), statements_sent() as sent:
        with hold():
            Thread.objects.filter(pk=thread.pk).update(subject="held")
        assert Thread.objects.get(pk=thread.pk).subject == "held"
        assert len(sent) == 1


def test_what_is_still_held_at_the_end_of_the_block_is_written(account):
    thread = Thread.objects.create(account=account)
    with transaction.atomic(), writes_held(), hold():
        Thread.objects.filter(pk=thread.pk).update(subject="at the end")
    assert Thread.objects.get(pk=thread.pk).subject == "at the end"


def test_an_exception_drops_what_the_block_held(account):
    thread = Thread.objects.create(account=account)
    with transaction.atomic():
        with pytest.raises(ValueError), writes_held():
            with hold():
                Thread.objects.filter(pk=thread.pk).update(subject="dropped")
            raise ValueError("a message's own failure")
        Thread.objects.filter(pk=thread.pk).update(snippet="the transaction goes on")
    thread.refresh_from_db()
    assert (thread.subject, thread.snippet) == ("", "the transaction goes on")


def test_a_failing_held_write_fails_its_savepoint_only(account):
    """As ingestion isolates a bad message: the savepoint rolls back, the rest commits."""
    first = Thread.objects.create(account=account)
    with transaction.atomic(), writes_held():
        Thread.objects.filter(pk=first.pk).update(subject="kept")
        with pytest.raises(IntegrityError), transaction.atomic(), writes_held():
            with hold(), connection.cursor() as cursor:
                cursor.execute("INSERT INTO mailstore_thread (id) VALUES (%s)", [first.pk])
            Thread.objects.count()  # carries the held INSERT, which fails
        assert Thread.objects.filter(account=account).count() == 1
    first.refresh_from_db()
    assert first.subject == "kept"
