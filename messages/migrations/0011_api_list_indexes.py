"""Indexes for the API at millions of messages: a folder's list walks its locations in the
list's order; search reaches one account's matches only (btree_gin). Built concurrently, so a
live store keeps taking mail while they build."""

import django.contrib.postgres.indexes
from django.contrib.postgres.operations import (
    AddIndexConcurrently,
    BtreeGinExtension,
    RemoveIndexConcurrently,
)
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("mailstore", "0010_message_server_ids"),
    ]

    operations = [
        BtreeGinExtension(),
        AddIndexConcurrently(
            model_name="messagelocation",
            index=models.Index(
                fields=["folder", "-sort_date", "-message"], name="location_folder_newest_page"
            ),
        ),
        RemoveIndexConcurrently(model_name="messagelocation", name="location_folder_newest"),
        AddIndexConcurrently(
            model_name="message",
            index=django.contrib.postgres.indexes.GinIndex(
                fields=["account", "search_vector"], name="message_account_search"
            ),
        ),
        RemoveIndexConcurrently(model_name="message", name="message_search"),
    ]
