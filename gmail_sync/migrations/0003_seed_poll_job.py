"""Seed beat's Gmail poll: a history sync of every active Gmail account every 5 minutes
(pushes can be dropped; the poll bounds how late a change can be)."""

from django.db import migrations

TASK = "gmail_sync.poll_accounts"
NAME = "Poll Gmail accounts (history sync)"


def seed(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=5, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=NAME, defaults={"task": TASK, "interval": every, "queue": "gmail", "enabled": True}
    )


def unseed(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("gmail_sync", "0002_seed_watch_renewal"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(seed, unseed)]
