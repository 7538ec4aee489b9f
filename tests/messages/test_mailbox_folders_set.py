"""`mailbox.message_folders_set`: a message's folders and flags set to the provider's exactly
(Gmail's labels), with the changes feed told; `mailbox.messages_remove`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from messages import mailbox
from messages.ingest import messages_upsert
from messages.models import ChangeEvent, Message
from tests.conftest import incoming
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored(account):
    item = incoming(make_mail("m"), provider_id="gm:1", flags=[])
    item.folders = ["INBOX", "Label_1"]
    messages_upsert(account=account, items=[item])
    return Message.objects.get(account=account)


def folders_of(message) -> set[str]:
    return set(message.locations.values_list("folder__name", flat=True))


def events(kind: str) -> set[int]:
    return set(
        ChangeEvent.objects.filter(object_type="message", kind=kind).values_list(
            "object_id", flat=True
        )
    )


def test_folders_and_flags_become_exactly_the_providers(account, stored):
    changed, deleted = mailbox.message_folders_set(
        account, {"gm:1": ["Label_1", "STARRED"]}, flags={"gm:1": ["\\Seen", "\\Flagged"]}
    )

    assert (changed, deleted) == (1, 0)
    assert folders_of(stored) == {"Label_1", "STARRED"}
    stored.refresh_from_db()
    assert stored.is_read and stored.is_flagged
    assert stored.pk in events("updated")  # the changes feed tells clients
    assert mailbox.message_folders_set(account, {"gm:1": ["Label_1", "STARRED"]}) == (0, 0)


def test_flags_changed_after_they_were_read_stay(account, stored):
    Message.objects.filter(pk=stored.pk).update(is_read=True, flags_at=timezone.now())
    read_before = timezone.now() - timedelta(minutes=1)

    mailbox.message_folders_set(
        account, {"gm:1": ["INBOX", "Label_1"]}, flags={"gm:1": []}, as_of=read_before
    )

    stored.refresh_from_db()
    assert stored.is_read


def test_a_message_left_in_no_folder_is_deleted(account, stored):
    assert mailbox.message_folders_set(account, {"gm:1": [], "gm:404": ["INBOX"]}) == (1, 1)
    assert not Message.objects.filter(account=account).exists()
    assert stored.pk in events("deleted")


def test_messages_remove_deletes_by_provider_id(account, stored):
    assert mailbox.messages_remove(account, ["gm:1", "gm:2"]) == 1
    assert not Message.objects.filter(account=account).exists()
    assert mailbox.messages_remove(account, ["gm:1"]) == 0
