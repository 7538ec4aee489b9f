"""Seed beat's storage sweeper: media files no row names, and dead processes' temp dirs
(messages.storage_sweep; the interval is editable in the admin)."""

from django.conf import settings
from django.db import migrations

TASK = "messages.storage_sweep"
NAME = "Sweep media files no row names"


def seed(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(
        every=settings.STORAGE_SWEEP_INTERVAL_MINUTES, period="minutes"
    )
    PeriodicTask.objects.get_or_create(
        name=NAME,
        defaults={"task": TASK, "interval": every, "queue": "default", "enabled": True},
    )


def unseed(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("mailstore", "0006_sync_resilience"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(seed, unseed)]
