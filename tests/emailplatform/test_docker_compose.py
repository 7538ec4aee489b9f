"""docker-compose.yml is valid and names only things that exist: no Docker engine runs here.

`docker-compose config` checks the file against the Compose schema and interpolation rules;
the rest reads the YAML and checks every command against the code: the Celery app module, the
Django management commands and the queues of emailplatform.topics.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import get_commands

from emailplatform import topics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
REQUIRED_SECRETS = {
    "POSTGRES_PASSWORD": "compose-test-pg-password",
    "REDIS_PASSWORD": "compose-test-redis-password",
    "SECRET_KEY": "compose-test-secret-key",
    "CREDENTIALS_KEYS": "Y29tcG9zZS10ZXN0LWtleS0zMi1ieXRlcy1sb25nLS0=",
}
SHELL_SEPARATORS = {"&&", "||", ";", "|", "&"}


def docker_compose() -> str:
    found = shutil.which("docker-compose") or (
        "/usr/bin/docker-compose" if os.access("/usr/bin/docker-compose", os.X_OK) else None
    )
    if not found:
        pytest.fail(
            "docker-compose is not installed, so docker-compose.yml cannot be validated: "
            "run scripts/bootstrap.sh (it installs Debian's docker-compose package)."
        )
    return found


def run_config(tmp_path: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`docker-compose config -q` with only the given variables (no .env file, no leaks)."""
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    env = {
        key: value
        for key, value in os.environ.items()
        if key in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}
    }
    env.update(extra_env)
    return subprocess.run(
        [
            docker_compose(),
            "--env-file",
            str(empty_env_file),
            "-f",
            str(COMPOSE_FILE),
            "config",
            "-q",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def simple_commands(command: str | list[str] | None) -> list[list[str]]:
    """A service command as the simple commands it runs (`sh -c "a && b"` gives a and b)."""
    if command is None:
        return []
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    if len(words) >= 3 and Path(words[0]).name in {"sh", "bash"} and words[1] == "-c":
        lexer = shlex.shlex(words[2], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
    commands: list[list[str]] = [[]]
    for word in words:
        if word in SHELL_SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(word)
    return [[w for w in cmd if w != "exec"] for cmd in commands if cmd]


def all_commands(services: dict[str, dict[str, Any]]) -> list[tuple[str, list[str]]]:
    return [
        (name, cmd)
        for name, service in services.items()
        for cmd in simple_commands(service.get("command"))
    ]


def option_value(cmd: list[str], short: str, long: str) -> str | None:
    for index, word in enumerate(cmd):
        if word in (short, long) and index + 1 < len(cmd):
            return cmd[index + 1]
        if word.startswith(f"{long}="):
            return word.split("=", 1)[1]
        if word.startswith(short) and len(word) > len(short) and not word.startswith("--"):
            return word[len(short) :]
    return None


def celery_commands(services: dict[str, dict[str, Any]]) -> list[tuple[str, list[str]]]:
    return [(name, cmd) for name, cmd in all_commands(services) if Path(cmd[0]).name == "celery"]


def worker_queues(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    queues: dict[str, list[str]] = {}
    for name, cmd in celery_commands(services):
        if "worker" in cmd:
            value = option_value(cmd, "-Q", "--queues")
            queues[name] = [q.strip() for q in value.split(",")] if value else []
    return queues


def app_services(services: dict[str, dict[str, Any]]) -> list[str]:
    """Services that run the project's image (web, workers, beat)."""
    return [name for name, service in services.items() if service.get("build") == "."]


def test_docker_compose_config_is_valid(tmp_path: Path) -> None:
    result = run_config(tmp_path, REQUIRED_SECRETS)
    assert result.returncode == 0, (
        f"docker-compose config -q failed ({result.returncode}):\n{result.stderr}{result.stdout}"
    )


@pytest.mark.parametrize("missing", sorted(REQUIRED_SECRETS))
def test_secrets_are_required(tmp_path: Path, missing: str) -> None:
    env = {key: value for key, value in REQUIRED_SECRETS.items() if key != missing}
    result = run_config(tmp_path, env)
    assert result.returncode != 0, f"config succeeded without {missing}"
    assert missing in result.stderr


def test_core_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert {"postgres", "redis", "web", "beat"} <= services.keys()
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis:7")


def test_every_queue_has_a_worker(services: dict[str, dict[str, Any]]) -> None:
    consumed = {q for queues in worker_queues(services).values() for q in queues}
    missing = set(topics.ALL_QUEUES) - consumed
    assert not missing, f"no worker consumes {sorted(missing)}"


def test_workers_name_only_real_queues(services: dict[str, dict[str, Any]]) -> None:
    queues = worker_queues(services)
    assert queues, "no celery worker service"
    for name, names in queues.items():
        assert names, f"{name}: worker without -Q would consume only the default queue"
        unknown = set(names) - set(topics.ALL_QUEUES)
        assert not unknown, f"{name}: unknown queues {sorted(unknown)}"


def test_beat_runs_celery_beat(services: dict[str, dict[str, Any]]) -> None:
    beat = [cmd for name, cmd in celery_commands(services) if name == "beat"]
    assert beat and "beat" in beat[0]
    beats = [name for name, cmd in celery_commands(services) if "beat" in cmd]
    assert beats == ["beat"], f"exactly one beat, found {beats}"


def test_celery_app_module_is_real(services: dict[str, dict[str, Any]]) -> None:
    commands = celery_commands(services)
    assert commands
    for name, cmd in commands:
        app = option_value(cmd, "-A", "--app")
        assert app, f"{name}: celery without -A"
        module = importlib.import_module(app.split(":")[0])
        assert hasattr(module, "celery_app"), f"{name}: {app} has no celery_app"


def test_manage_py_commands_are_real(services: dict[str, dict[str, Any]]) -> None:
    known = get_commands()
    used = []
    for name, cmd in all_commands(services):
        for index, word in enumerate(cmd):
            if Path(word).name == "manage.py":
                assert index + 1 < len(cmd), f"{name}: manage.py without a command"
                assert cmd[index + 1] in known, f"{name}: no management command {cmd[index + 1]}"
                used.append(cmd[index + 1])
    assert {"migrate", "imap_idle"} <= set(used)
    assert "runserver" not in used, "containers serve with gunicorn, not Django's runserver"


def healthcheck_text(services: dict[str, dict[str, Any]], name: str) -> str:
    test = services[name]["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def test_every_service_restarts_and_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", f"{name}: no restart policy"
        assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        assert not service["healthcheck"].get("disable"), name


def test_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    def text(name: str) -> str:
        return healthcheck_text(services, name)

    assert "pg_isready" in text("postgres")
    assert "redis-cli" in text("redis") and "ping" in text("redis")
    assert "/healthz" in text("web") and "urllib" in text("web")


def test_worker_healthchecks_ping_their_own_node(services: dict[str, dict[str, Any]]) -> None:
    for name in worker_queues(services):
        [cmd] = simple_commands(services[name]["command"])
        node = option_value(cmd, "-n", "--hostname")
        assert node and node.endswith("@%h"), f"{name}: name the worker node@%h"
        check = healthcheck_text(services, name)
        assert "inspect ping" in check, name
        # %h is the host name; $$ escapes compose's interpolation, so the shell sees $HOSTNAME.
        assert f"-d {node.removesuffix('@%h')}@$$HOSTNAME" in check, (name, check)


def test_heartbeat_healthchecks_read_the_file_their_process_touches(
    services: dict[str, dict[str, Any]],
) -> None:
    [idle] = simple_commands(services["imap-idle"]["command"])
    heartbeat = option_value(idle, "--heartbeat", "--heartbeat")
    assert heartbeat and heartbeat in healthcheck_text(services, "imap-idle")

    [beat] = simple_commands(services["beat"]["command"])
    scheduler = option_value(beat, "-S", "--scheduler")
    module, _, attr = scheduler.partition(":")
    assert hasattr(importlib.import_module(module), attr), scheduler
    heartbeat = services["beat"]["environment"]["BEAT_HEARTBEAT_FILE"]
    assert heartbeat in healthcheck_text(services, "beat")


def gunicorn_command(cmd: list[str]) -> None:
    """A gunicorn command line that serves the project's WSGI application."""
    app = next(word for word in cmd[1:] if not word.startswith("-") and ":" in word)
    module, _, attr = app.partition(":")
    assert hasattr(importlib.import_module(module), attr), app
    assert option_value(cmd, "-b", "--bind").endswith(":8000")
    workers = option_value(cmd, "-w", "--workers")
    assert workers and (workers.isdigit() or re.fullmatch(r"\$\{WEB_WORKERS:-\d+\}", workers))
    assert option_value(cmd, "--access-logfile", "--access-logfile") == "-"


def test_web_serves_with_gunicorn(services: dict[str, dict[str, Any]]) -> None:
    commands = simple_commands(services["web"]["command"])
    assert commands[0][:3] == ["python", "manage.py", "migrate"], "web migrates first"
    [served] = [cmd for cmd in commands if Path(cmd[0]).name == "gunicorn"]
    gunicorn_command(served)


def test_image_serves_with_gunicorn_and_collects_static_files(
    services: dict[str, dict[str, Any]],
) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, flags=re.MULTILINE)
    assert cmd, "the image has a CMD"
    words = json.loads(cmd.group(1))
    assert words[0] == "gunicorn"
    gunicorn_command(words)
    assert re.search(r"^RUN .*manage\.py collectstatic --noinput", dockerfile, flags=re.MULTILINE)
    static_root = services["web"]["environment"]["STATIC_ROOT"]
    assert f"ENV STATIC_ROOT={static_root}" in dockerfile, "collected where compose serves from"


def test_depends_on_waits_for_health(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for target, spec in depends.items():
            assert spec.get("condition") == "service_healthy", f"{name} -> {target}"
            assert services[target].get("healthcheck"), f"{name} waits on {target}: no healthcheck"
    for name in ("worker", "beat"):
        for service_name, service in services.items():
            if service_name.startswith(name):
                assert {"postgres", "redis"} <= set(service.get("depends_on") or {})


def test_environment_matches_env_example(services: dict[str, dict[str, Any]]) -> None:
    example = (ROOT / ".env.example").read_text()
    names = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "CREDENTIALS_KEYS"} <= names
    for name in app_services(services):
        environment = services[name].get("environment") or {}
        missing = names - set(environment)
        assert not missing, f"{name}: environment lacks {sorted(missing)}"


def test_media_root_is_a_shared_volume(services: dict[str, dict[str, Any]]) -> None:
    names = app_services(services)
    assert {"web", "beat", *worker_queues(services)} <= set(names)
    for name in names:
        service = services[name]
        media_root = service["environment"]["MEDIA_ROOT"]
        targets = [str(v).split(":")[1] for v in service.get("volumes", []) if ":" in str(v)]
        assert media_root in targets, f"{name}: MEDIA_ROOT {media_root} is not a volume"


def test_dockerignore_keeps_secrets_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".env", ".venv", ".local", ".git"):
        assert entry in ignored
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "python:3.11-slim-bookworm" in dockerfile
    assert "requirements.txt" in dockerfile


def test_readme_names_exactly_the_variables_config_requires() -> None:
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", COMPOSE_FILE.read_text()))
    assert required == set(REQUIRED_SECRETS)
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### docker-compose\n", 1)[1].split("\n### ", 1)[0]
    listed = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", section, flags=re.MULTILINE))
    assert listed == required


def test_pgbouncer_is_an_opt_in_profile_with_transaction_pooling(
    services: dict[str, dict[str, Any]],
) -> None:
    bouncer = services["pgbouncer"]
    assert bouncer["profiles"] == ["pgbouncer"]
    entrypoint = (ROOT / bouncer["build"] / "entrypoint.sh").read_text()
    assert "pool_mode = transaction" in entrypoint
    web_env = services["web"]["environment"]
    assert "${DATABASE_HOST:-postgres}:${DATABASE_PORT:-5432}" in web_env["DATABASE_URL"]
    assert web_env["DB_TRANSACTION_POOLING"] == "${DB_TRANSACTION_POOLING:-0}"
