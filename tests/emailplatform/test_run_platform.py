"""`make run` supervises its children: one that dies is started again with backoff while the
others go on, and stopping ends them all."""

import importlib.util
import os
import signal
import sys
import time
from pathlib import Path

from tests.worker import wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def load_run_platform():
    if "run_platform" in sys.modules:
        return sys.modules["run_platform"]
    spec = importlib.util.spec_from_file_location("run_platform", ROOT / "scripts/run_platform.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_platform"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def alive(proc) -> bool:
    return proc is not None and proc.poll() is None


def supervisor(commands, **options):
    lines: list[str] = []
    sup = load_run_platform().Supervisor(commands, poll_interval=0.05, log=lines.append, **options)
    return sup, lines


def test_a_child_killed_with_sigkill_is_restarted_and_the_others_keep_running():
    sup, lines = supervisor({"worker": SLEEPER, "web": SLEEPER}, backoff_start=0.2)
    sup.start()
    try:
        worker, web = sup.children["worker"].proc, sup.children["web"].proc
        os.kill(worker.pid, signal.SIGKILL)
        wait_for(
            lambda: (
                (sup.poll() or True)
                and alive(sup.children["worker"].proc)
                and sup.children["worker"].proc is not worker
            ),
            timeout=10,
            interval=0.05,
            what="the worker started again",
        )
        assert sup.children["web"].proc is web and alive(web), "the others are left alone"
        assert sup.children["worker"].restarts == 1
        assert any(f"worker exited with -{signal.SIGKILL}" in line for line in lines), lines
    finally:
        sup.stop()
    assert not any(alive(child.proc) for child in sup.children.values())


def test_a_child_that_keeps_dying_is_restarted_with_growing_delays_up_to_the_maximum():
    dies = [sys.executable, "-c", "raise SystemExit(3)"]
    sup, _lines = supervisor({"beat": dies}, backoff_start=0.1, backoff_max=0.4)
    sup.start()
    try:
        wait_for(
            lambda: (sup.poll() or True) and len(sup.children["beat"].history) >= 5,
            timeout=20,
            interval=0.02,
            what="five exits",
        )
    finally:
        sup.stop()
    child = sup.children["beat"]
    assert [status for _at, status in child.history] == [3] * len(child.history)
    gaps = [b - a for (a, _), (b, _) in zip(child.history, child.history[1:], strict=False)]
    # restarted after 0.1, 0.2, 0.4, 0.4 s: doubling from the start, capped at the maximum
    assert [gap >= least for gap, least in zip(gaps, [0.1, 0.2, 0.4, 0.4], strict=False)] == [
        True
    ] * 4, gaps
    assert all(gap < 0.4 + 1.0 for gap in gaps), gaps


def test_the_backoff_starts_over_once_a_child_stayed_up():
    sup, _lines = supervisor({"idle": SLEEPER}, backoff_start=0.1, stable_after=0.3)
    sup.start()
    try:
        child = sup.children["idle"]
        child.delay = 30.0  # as after many quick deaths
        time.sleep(0.4)  # then it stayed up
        child.proc.kill()
        wait_for(
            lambda: (sup.poll() or True) and alive(child.proc) and child.restarts == 1,
            timeout=5,
            interval=0.02,
            what="a quick restart",
        )
        assert child.delay == 0.1
    finally:
        sup.stop()


def test_run_stops_every_child_when_asked():
    sup, _lines = supervisor({"a": SLEEPER, "b": SLEEPER})
    deadline = time.monotonic() + 1.0
    sup.run(lambda: time.monotonic() > deadline)
    procs = [child.proc for child in sup.children.values()]
    assert all(alive(proc) for proc in procs)
    sup.stop()
    assert not any(alive(proc) for proc in procs)
