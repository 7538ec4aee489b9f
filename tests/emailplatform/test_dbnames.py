"""Each kind of process has its own name in pg_stat_activity (README, "Database connections")."""

import pytest
from django.db import connection

from emailplatform.dbnames import application_name


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["/venv/bin/celery", "-A", "emailplatform", "worker", "-n", "sync@%h"], "worker:sync"),
        (
            ["celery", "-A", "emailplatform", "worker", "--hostname=new-message@h"],
            "worker:new-message",
        ),
        (["celery", "-A", "emailplatform", "beat", "-S", "x:Y"], "beat"),
        (["manage.py", "imap_idle", "--shard", "0/1"], "imap_idle"),
        (["manage.py", "runserver", "127.0.0.1:8000"], "web"),
        (["/venv/bin/gunicorn", "emailplatform.wsgi:application"], "web"),
        (["-c"], "python"),
    ],
)
def test_names_by_process(argv, name):
    assert application_name(argv, environ={}) == f"emailplatform:{name}"


def test_a_given_name_wins_and_is_cut_to_postgresqls_limit():
    assert application_name(["manage.py", "shell"], {"DB_APPLICATION_NAME": "x" * 80}) == "x" * 63


@pytest.mark.django_db
def test_postgresql_sees_the_name():
    with connection.cursor() as cursor:
        cursor.execute("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        assert cursor.fetchone()[0].startswith("emailplatform:")
