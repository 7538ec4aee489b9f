"""Production settings: `check --deploy` is clean with the documented environment, static files
are served by the app itself (WhiteNoise) with DEBUG off, links follow the proxy's scheme."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]

# The production environment .env.example documents (secrets made up here).
PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "k9#Qz!v2@Lr8$Wm4^Tp6&Yc1*Hb3(Nd5)Fg7_Js0+Xa-Ue=Oi~Ek" * 2,
    "ALLOWED_HOSTS": "mail.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://mail.example.com",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "STATIC_MANIFEST": "1",
}


def env_example() -> dict[str, str]:
    """Every `NAME=value` of .env.example, set or commented out (`# NAME=value`)."""
    return dict(
        re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.M)
    )


def test_the_documented_environment_names_every_production_setting():
    documented = env_example()
    for key, value in PRODUCTION_ENV.items():
        if key not in ("SECRET_KEY",):
            assert documented.get(key) == value, key


def test_check_deploy_has_no_warnings():
    env = {k: v for k, v in os.environ.items() if k not in PRODUCTION_ENV}
    env.update(PRODUCTION_ENV)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


@pytest.fixture
def collected(settings, tmp_path):
    """collectstatic into a fresh STATIC_ROOT with the production storage (hashed names)."""
    settings.DEBUG = False
    settings.STATIC_ROOT = tmp_path / "static"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    call_command("collectstatic", interactive=False, verbosity=0)
    return Client()  # a new handler: WhiteNoise reads STATIC_ROOT when it starts


def static_urls(html: str) -> list[str]:
    return sorted(set(re.findall(r'(?:href|src)="(/static/[^"]+)"', html)))


@pytest.mark.django_db
def test_static_files_are_served_with_debug_off(collected, admin_client):
    # The admin's stylesheets and scripts, by the hashed names its pages link.
    page = admin_client.get("/admin/").content.decode()
    admin_files = static_urls(page)
    assert any(re.match(r"/static/admin/css/base\.[0-9a-f]{12}\.css$", u) for u in admin_files)
    for url in admin_files:
        response = collected.get(url)
        assert response.status_code == 200, url
        assert "max-age=315360000" in response["Cache-Control"], url
        assert b"".join(response.streaming_content)
    # Swagger UI's files (drf-spectacular-sidecar): the docs page is not blank.
    docs = collected.get("/api/docs/").content.decode()
    sidecar = static_urls(docs) + re.findall(r'"(/static/drf_spectacular_sidecar/[^"]+)"', docs)
    assert any("swagger-ui-bundle" in u for u in sidecar), docs
    for url in sidecar:
        response = collected.get(url)
        assert response.status_code == 200, url
    css = collected.get(next(u for u in admin_files if "base." in u), HTTP_ACCEPT_ENCODING="gzip")
    assert css["Content-Encoding"] == "gzip"


def test_numeric_passwords_are_refused():
    with pytest.raises(ValidationError, match="entirely numeric"):
        validate_password("40719385216473")
