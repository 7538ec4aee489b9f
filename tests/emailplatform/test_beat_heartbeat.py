"""Beat (with the heartbeat scheduler the containers use) outlives the database: its
connections closed by the server, it logs, reconnects and keeps ticking."""

import pytest
from django.db import connection

from tests.worker import start_beat, stop_worker, terminate_other_backends, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_beat_ticks_on_through_a_database_outage(tmp_path):
    heartbeat = tmp_path / "beat.heartbeat"
    log = tmp_path / "beat.log"
    beat = start_beat(log, {"BEAT_HEARTBEAT_FILE": str(heartbeat)})
    try:
        wait_for(heartbeat.exists, timeout=60, what="beat's first tick")
        for _ in range(2):
            terminate_other_backends()
            seen = heartbeat.stat().st_mtime_ns
            wait_for(
                lambda seen=seen: heartbeat.stat().st_mtime_ns > seen,
                timeout=30,
                what="beat ticking after its connection was closed",
            )
        assert beat.poll() is None, "beat exited"
    except AssertionError:
        print(log.read_text()[-20000:])
        raise
    finally:
        stop_worker(beat)
        connection.close()
