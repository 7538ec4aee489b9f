"""The README's first API calls work as written: its curl lines, run by a shell against a live
server (only the address, the password and the long poll's wait are put in)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_first_api_call() -> str:
    readme = (ROOT / "README.md").read_text()
    after = readme.split("**A first API call**", 1)[1]
    block = re.search(r"```sh\n(.*?)```", after, flags=re.DOTALL).group(1)
    return "\n".join(line.strip() for line in block.splitlines())


@pytest.mark.django_db(transaction=True)
def test_the_readme_curl_examples_answer(live_server, django_user_model):
    if not shutil.which("curl"):
        pytest.fail("curl is not installed")
    django_user_model.objects.create_superuser("admin", "admin@localhost", "readme-pw-123")
    script = (
        readme_first_api_call()
        .replace("http://127.0.0.1:8000", live_server.url)
        .replace('"PASSWORD"', '"readme-pw-123"')
        .replace("wait=25", "wait=1")
        .replace("curl -s ", "curl -sf ")
    )
    script = re.sub(r"\s+# .*$", "", script, flags=re.MULTILINE)  # trailing comments
    script = script.replace("\\\n", " ")
    lines = [line for line in script.splitlines() if line.strip()]
    prefix = "\n".join(line for line in lines if not line.startswith("curl"))  # the token
    outputs = []
    for line in lines:
        if not line.startswith("curl"):
            continue
        done = subprocess.run(
            ["sh", "-ec", f"{prefix}\n{line}"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (line, done.stderr)
        outputs.append((line, json.loads(done.stdout)))
    assert len(outputs) == 4
    endpoints, accounts, messages, changes = (body for _line, body in outputs)
    assert "accounts" in json.dumps(endpoints)
    assert isinstance(accounts, list | dict) and isinstance(messages, list | dict)
    assert set(changes) == {"changes", "cursor", "has_more"}
