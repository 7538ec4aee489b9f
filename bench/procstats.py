"""What the benchmarks measure about processes and Redis, read from /proc and `INFO memory`.

Linux only (the benchmarks run on Debian). A process tree is a process and its descendants:
a Celery prefork worker is its main process and one child per pool slot, each counted apart.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import redis

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessStats:
    pid: int
    name: str
    peak_rss_kb: int  # VmHWM: the process's peak resident set since it started
    rss_kb: int
    cpu_seconds: float  # user + system, this process only
    reaped_cpu_seconds: float = (
        0.0  # user + system of its children that exited (and were waited for)
    )


def _ppid_and_name(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), name


def process_tree(pid: int) -> list[int]:
    """PID and every live descendant, parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _ppid_and_name(int(entry))
            if info is not None:
                children.setdefault(info[0], []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        todo.extend(sorted(children.get(current, [])))
    return tree


def process_stats(pid: int) -> ProcessStats | None:
    """None when the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    values = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Name", "VmHWM", "VmRSS"):
            values[key] = rest.split()[0] if rest.split() else "0"
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    reaped = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS  # cutime, cstime
    return ProcessStats(
        pid=pid,
        name=values.get("Name", "?"),
        peak_rss_kb=int(values.get("VmHWM", 0)),
        rss_kb=int(values.get("VmRSS", 0)),
        cpu_seconds=cpu,
        reaped_cpu_seconds=reaped,
    )


def tree_stats(pid: int) -> list[ProcessStats]:
    """Stats of each live process of PID's tree."""
    return [s for s in (process_stats(p) for p in process_tree(pid)) if s is not None]


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of PID's tree, the exited children that PID reaped included (PostgreSQL's
    backends come and go with their connections)."""
    stats = tree_stats(pid)
    return sum(s.cpu_seconds for s in stats) + (stats[0].reaped_cpu_seconds if stats else 0.0)


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


class RedisMemorySampler:
    """Samples Redis' `used_memory` every INTERVAL seconds in a thread, while in a `with`.

    The peak is what the samples saw: a spike shorter than INTERVAL may be missed."""

    def __init__(self, url: str, interval: float = 0.1) -> None:
        self.client = redis.Redis.from_url(url)
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-memory", daemon=True)

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def __enter__(self) -> RedisMemorySampler:
        self.baseline = self.peak = self.used_memory()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        try:
            used = self.used_memory()
        except redis.RedisError:
            return
        self.samples += 1
        self.peak = max(self.peak, used)
