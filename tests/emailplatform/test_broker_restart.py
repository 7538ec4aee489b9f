"""A Redis restart under a worker that holds an unacknowledged message (a task waiting on its
countdown) must not kill the worker: it reconnects and runs what is published next.

celery 5.7.0 dies here ("Unrecoverable error: AttributeError(\"'NoneType' object has no
attribute 'hostname'\")", exit 1); see the comment at the celery pin in requirements.txt."""

import pytest
from django.db import connection

from emailplatform import topics
from emailplatform.celery import app
from messages.models import Message
from tests.mailfactory import make_mail
from tests.worker import RedisServer, start_worker, stop_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def payload(account_id, name):
    item = topics.new_message_item(make_mail(name, message_id=f"<{name}@x>"), folder="INBOX")
    return topics.new_message_payload(account_id, "local", [item])


def publish(url, account_id, name, **options):
    with app.connection_for_write(url) as conn:
        app.send_task(
            topics.TASK_INGEST_NEW_MESSAGES,
            args=[payload(account_id, name)],
            queue=topics.QUEUE_NEW_MESSAGE,
            connection=conn,
            **options,
        )


def test_worker_survives_a_redis_restart_while_holding_an_unacked_task(account, tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    log = tmp_path / "worker.log"
    worker = start_worker([topics.QUEUE_NEW_MESSAGE], log, {"CELERY_BROKER_URL": redis.url})
    try:
        # Held, unacknowledged, until its countdown: the worker has it reserved when Redis goes.
        publish(redis.url, account.pk, "later", countdown=600)
        wait_for(lambda: b"received" in log.read_bytes(), timeout=60, what="the task reserved")

        redis.restart()
        wait_for(
            lambda: (
                worker.poll() is not None
                or b"Connected to redis" in log.read_bytes().split(b"broker lost")[-1]
            ),
            timeout=60,
            what="the worker to reconnect (or die)",
        )
        assert worker.poll() is None, "the worker died when Redis restarted"

        publish(redis.url, account.pk, "after-restart")
        wait_for(
            lambda: Message.objects.filter(account=account).exists(),
            timeout=60,
            what="a task published after the restart to run",
        )
        assert worker.poll() is None
        assert list(Message.objects.values_list("subject", flat=True)) == ["after-restart"]
    except AssertionError:
        print(log.read_text()[-20000:])
        raise
    finally:
        stop_worker(worker)
        redis.stop()
        connection.close()
