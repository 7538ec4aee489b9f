"""The benchmarks' process and Redis measurements, against real processes and the real Redis."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import redis
from django.conf import settings

from bench.procstats import RedisMemorySampler, machine_cpu_seconds, tree_cpu_seconds, tree_stats

MB = 1024 * 1024

# A parent that stays small and a child that touches 150 MB and burns CPU, both kept alive
# until stdin closes.
FORKING = """
import os, sys, time
if os.fork() == 0:
    block = bytearray(150 * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    end = time.process_time() + 0.5
    while time.process_time() < end:
        pass
    print("ready", flush=True)
    sys.stdin.read()
    os._exit(0)
sys.stdin.read()
"""


def test_tree_stats_reports_each_process_of_a_tree_with_its_own_peak_and_cpu():
    proc = subprocess.Popen(
        [sys.executable, "-c", FORKING], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        parent, *children = tree_stats(proc.pid)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    assert parent.pid == proc.pid
    assert len(children) == 1
    assert children[0].peak_rss_kb * 1024 >= 140 * MB
    assert parent.peak_rss_kb * 1024 < 100 * MB
    assert children[0].cpu_seconds >= 0.4
    assert tree_stats(proc.pid) == []  # gone


# A parent whose child burns CPU and exits (reaped) before the parent says it is ready.
REAPING = """
import os, sys, time
pid = os.fork()
if pid == 0:
    end = time.process_time() + 0.5
    while time.process_time() < end:
        pass
    os._exit(0)
os.waitpid(pid, 0)
print("ready", flush=True)
sys.stdin.read()
"""


def test_tree_cpu_seconds_counts_the_children_that_exited():
    proc = subprocess.Popen(
        [sys.executable, "-c", REAPING], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert len(tree_stats(proc.pid)) == 1
        assert tree_cpu_seconds(proc.pid) >= 0.45
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def test_machine_cpu_seconds_advance_while_this_process_works():
    busy_before, total_before = machine_cpu_seconds()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    busy_after, total_after = machine_cpu_seconds()
    assert busy_after - busy_before >= 0.25
    # Equal on a machine with no idle time: compare with a hundredth of a second to spare.
    assert total_after - total_before >= busy_after - busy_before - 0.01


def test_redis_sampler_catches_a_peak_that_is_gone_at_the_end():
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    key = f"test-procstats-{uuid.uuid4().hex}"
    with RedisMemorySampler(settings.CELERY_BROKER_URL, interval=0.02) as sampler:
        client.set(key, b"x" * (30 * MB))
        time.sleep(0.2)
        client.delete(key)
        time.sleep(0.1)
    assert sampler.samples >= 5
    assert sampler.peak - sampler.baseline >= 28 * MB
    assert sampler.used_memory() < sampler.peak - 20 * MB
