"""Flower as docker-compose.yml and `make run` start it: it serves, behind basic auth when asked,
and `make run` binds it to the loopback address."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.emailplatform.test_run_platform import load_run_platform
from tests.worker import ROOT, free_port, process_env, stop_worker, wait_for


def compose_flower_shell(port: int) -> str:
    """The flower service's shell command as its container runs it (compose turns $$ into $),
    on PORT of the loopback address instead of the container's 0.0.0.0:5555."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["flower"]
    assert service["ports"] == ["${FLOWER_BIND:-127.0.0.1}:${FLOWER_PORT:-5555}:5555"]
    sh, dash_c, script = service["command"]
    assert (sh, dash_c) == ("sh", "-c")
    script = script.replace("$$", "$")
    assert "--address=0.0.0.0 --port=5555" in script
    return script.replace("--address=0.0.0.0 --port=5555", f"--address=127.0.0.1 --port={port}")


def get(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)  # noqa: S310  (http://127.0.0.1 only)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.mark.django_db
def test_compose_flower_serves_behind_basic_auth(tmp_path):
    port = free_port()
    log = (tmp_path / "flower.log").open("wb")
    proc = subprocess.Popen(
        ["sh", "-c", compose_flower_shell(port)],
        cwd=ROOT,
        env=process_env(
            {
                "FLOWER_BASIC_AUTH": "ops:flower-pw-123",
                # the image has celery on its PATH: here, the virtualenv's
                "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            }
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(f"{base}/healthcheck") == 200, timeout=60, what="Flower up")
        assert get(f"{base}/") == 401
        assert get(f"{base}/", auth="ops:wrong") == 401
        assert get(f"{base}/workers", auth="ops:flower-pw-123") == 200
    except AssertionError:
        print((tmp_path / "flower.log").read_text()[-5000:])
        raise
    finally:
        stop_worker(proc)


def test_make_run_starts_flower_on_loopback_only_when_asked(monkeypatch):
    run_platform = load_run_platform()
    monkeypatch.delenv("FLOWER_PORT", raising=False)
    assert "flower" not in run_platform.platform_commands("8000")
    monkeypatch.setenv("FLOWER_PORT", "5566")
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:pw")
    command = run_platform.platform_commands("8000")["flower"]
    assert command[1:4] == ["-A", "emailplatform", "flower"]
    assert "--address=127.0.0.1" in command and "--port=5566" in command
    assert "--basic_auth=ops:pw" in command
