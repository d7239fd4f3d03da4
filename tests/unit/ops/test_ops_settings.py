"""Production settings: `check --deploy` is clean, and a missing or unsafe secret stops the start.

Each case runs `manage.py` in a subprocess with a production environment of its own, so that the settings
module is imported afresh (it decides at import time).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def production_env(tmp_path) -> dict[str, str]:
    """A complete, safe production environment on a throwaway SQLite database."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key in {"PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "SYSTEMROOT", "TMPDIR"}
    }
    env.update(
        DJANGO_ENV="production",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(60),
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        AUDIT_CHAIN_KEY=secrets.token_urlsafe(40),
        ALLOWED_HOSTS="example.com",
        DATABASE_URL=f"sqlite:///{tmp_path / 'deploy-check.sqlite3'}",
        VAR_DIR=str(tmp_path / "var"),
        # Nothing connects to it during these commands.
        REDIS_URL="redis://127.0.0.1:6379/7",
        # Empty values override anything a developer's .env file could supply.
        DJANGO_DEBUG="",
    )
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_in_production(production_env):
    result = manage(production_env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_development_runs_without_redis(production_env):
    # Only production needs the shared cache: the embedded default keeps working on one machine.
    production_env.update(DJANGO_ENV="development", REDIS_URL="")
    result = manage(production_env, "check")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DJANGO_SECRET_KEY", "", "DJANGO_SECRET_KEY must be set"),
        ("DJANGO_SECRET_KEY", "too-short-secret", "DJANGO_SECRET_KEY is unsafe"),
        ("DJANGO_SECRET_KEY", "django-insecure-" + "x" * 60, "DJANGO_SECRET_KEY is unsafe"),
        ("FIELD_ENCRYPTION_KEYS", "", "FIELD_ENCRYPTION_KEYS must be set"),
        ("AUDIT_CHAIN_KEY", "", "AUDIT_CHAIN_KEY must be set"),
        ("AUDIT_CHAIN_KEY", "short", "AUDIT_CHAIN_KEY is unsafe"),
        ("AUDIT_CHAIN_KEY", "dev-only-audit-chain-key-not-for-production", "AUDIT_CHAIN_KEY is unsafe"),
        ("ALLOWED_HOSTS", "", "ALLOWED_HOSTS must be set"),
        ("DJANGO_DEBUG", "true", "DJANGO_DEBUG must be off"),
        ("REDIS_URL", "", "REDIS_URL must be set when DJANGO_ENV=production"),
    ],
)
def test_production_refuses_to_start_without_a_safe_value(production_env, name, value, expected):
    production_env[name] = value
    result = manage(production_env, "check")
    assert result.returncode != 0
    assert expected in result.stderr


def test_production_refuses_the_development_field_encryption_key(production_env):
    import base64
    import hashlib

    production_env["FIELD_ENCRYPTION_KEYS"] = base64.urlsafe_b64encode(
        hashlib.sha256(b"dev-only-field-key").digest()
    ).decode()
    result = manage(production_env, "check")
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS contains the development key" in result.stderr


def test_gunicorn_starts_with_the_production_settings(production_env):
    # Loads gunicorn.conf.py and the WSGI app the way the Procfile's web line does, without serving.
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--check-config", "-c", "gunicorn.conf.py", "compliance.wsgi"],
        cwd=ROOT,
        env=production_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _read_variables(path: Path, pattern: str) -> set[str]:
    import re

    return set(re.findall(pattern, path.read_text()))


def test_env_example_names_every_variable_the_app_and_gunicorn_read():
    settings_vars = _read_variables(
        ROOT / "compliance" / "settings.py", r'env\.(?:str|int|bool|float|list|db)\(\s*"([A-Z0-9_]+)"'
    ) | _read_variables(ROOT / "compliance" / "settings.py", r'_required_secret\(\s*"([A-Z0-9_]+)"')
    gunicorn_vars = _read_variables(ROOT / "gunicorn.conf.py", r'os\.environ\.get\(\s*"([A-Z0-9_]+)"')
    example = _read_variables(ROOT / ".env.example", r"(?m)^([A-Z0-9_]+)=")
    assert len(settings_vars) > 40  # the pattern still finds the settings
    missing = sorted((settings_vars | gunicorn_vars) - example)
    assert not missing, f".env.example lacks {missing}"


def test_env_example_is_read_the_same_way_by_django_environ(monkeypatch):
    # django-environ keeps an inline "# comment" as part of the value: comments must be on their own lines.
    import environ

    for line in (ROOT / ".env.example").read_text().splitlines():
        assert not line.strip() or line.startswith("#") or "#" not in line, line
    parsed: dict[str, str] = {}
    monkeypatch.setattr(environ.Env, "ENVIRON", parsed)  # read into a dict, not into os.environ
    environ.Env.read_env(str(ROOT / ".env.example"))
    assert parsed["DJANGO_ENV"] == "production"
    assert parsed["DJANGO_SECRET_KEY"] == ""
    assert parsed["REDIS_URL"] == "redis://redis.internal:6379/0"
    assert parsed["ORGANISATION_NAME"] == "Example Ltd"
