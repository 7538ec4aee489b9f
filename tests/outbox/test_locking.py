"""A state change locks the outbound row only: locking its account too deadlocked against a
transaction that stores mail (the sent copy) for the same owner (found by make bench-smtp)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from messages.events import events_record
from messages.models import Folder, OutboundMessage
from messages.outbox import outbound_create
from messages.outbox_states import outbound_cancel

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_transition_and_a_store_of_the_same_owner_do_not_deadlock(user, sender):
    draft = outbound_create(
        user=user,
        data={"account": sender.pk, "to": [{"name": "", "address": "bob@example.org"}]},
    )
    holding_event_lock = threading.Event()
    errors: list[BaseException] = []

    def transition() -> None:
        try:
            holding_event_lock.wait(10)
            # Locks the outbound row, then waits for the owner's event lock held below.
            assert outbound_cancel(draft.pk) is not None
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=transition)
    thread.start()
    # Like batch_store: the owner's event lock first, then rows whose foreign key to the
    # account is checked (KEY SHARE on the account row) at commit.
    with transaction.atomic():
        events_record(sender, "folder", "created", [0])
        holding_event_lock.set()
        time.sleep(1.0)  # the transition is now waiting for the event lock
        Folder.objects.create(account=sender, name="Sent", display_name="Sent")
    thread.join(20)
    assert not thread.is_alive()
    assert errors == []
    assert OutboundMessage.objects.get(pk=draft.pk).state == "cancelled"
