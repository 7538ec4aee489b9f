"""The chaos suite's own judgement (scripts/chaos_checks.py): it kills the process it means to
(a sync worker is not a message worker), and it notices two sync passes of one account at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from chaos_checks import PassOverlap, role_of  # noqa: E402

from tests.emailplatform.test_run_platform import load_run_platform  # noqa: E402


def test_each_process_make_run_starts_has_its_own_role():
    commands = load_run_platform().platform_commands("8000")
    roles = {name: role_of(argv) for name, argv in commands.items()}
    assert roles == {name: name for name in commands}


def test_compose_workers_are_told_apart_by_their_queues():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert role_of(services["worker-new-message"]["command"]) == "message-worker"
    assert role_of(services["worker-sync"]["command"]) == "sync-worker"


def test_a_pool_child_has_its_main_processs_role_and_other_commands_none():
    worker = ["celery", "-A", "emailplatform", "worker", "--hostname=message@box", "-Q", "x"]
    assert role_of(worker) == "message-worker"
    assert role_of(["python", "manage.py", "migrate"]) is None


def test_passes_one_after_another_are_not_an_overlap():
    seen = PassOverlap()
    seen.feed([(1, "a"), (3, "a")])
    seen.feed([(3, "a"), (5, "b")])  # a's last batch still unstored when b starts: sampled
    seen.feed([(7, "b"), (8, "c")])
    assert seen.overlaps() == []


def test_a_pass_publishing_after_a_later_one_started_is_an_overlap():
    seen = PassOverlap()
    seen.feed([(1, "a"), (2, "b")])
    seen.feed([(4, "a"), (5, "c")])
    assert seen.overlaps() == [("a", "b")]
