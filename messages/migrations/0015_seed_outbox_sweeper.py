"""Seed beat's outbox sweeper (messages.outbox_dispatch.outbox_sweep: scheduled messages coming
due, lost send tasks, attempts stuck in `sending`; the interval is editable in the admin)."""

from django.conf import settings
from django.db import migrations

TASK = "messages.outbox_sweep"
NAME = "Sweep the outbox: due messages whose send task was lost"


def seed(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(
        every=settings.OUTBOX_SWEEP_INTERVAL_SECONDS, period="seconds"
    )
    PeriodicTask.objects.get_or_create(
        name=NAME,
        defaults={"task": TASK, "interval": every, "queue": "default", "enabled": True},
    )


def unseed(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("mailstore", "0014_outbox"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(seed, unseed)]
