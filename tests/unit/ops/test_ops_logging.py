"""Structured logs: JSON in production, readable text in development, emails and tokens redacted."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from gdpr_requests.ops.logging import JsonFormatter, RedactFilter, TextFormatter, redact

ROOT = Path(__file__).resolve().parents[3]


def emit(formatter: logging.Formatter, message: str, *args, exc: BaseException | None = None, **extra) -> str:
    """Log one record through a handler with the redaction filter and ``formatter``; return the output."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactFilter())
    logger = logging.getLogger("tests.ops.logging")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        if exc is not None:
            try:
                raise exc
            except BaseException:
                logger.exception(message, *args, extra=extra)
        else:
            logger.warning(message, *args, extra=extra)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


def test_json_lines_carry_reference_task_id_and_outcome():
    line = emit(JsonFormatter(), "task submitted", reference="DSR-AB12-CD34", task_id=17, outcome="submitted")
    entry = json.loads(line)
    assert entry["message"] == "task submitted"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "tests.ops.logging"
    assert (entry["reference"], entry["task_id"], entry["outcome"]) == ("DSR-AB12-CD34", 17, "submitted")


def test_text_lines_are_readable_with_the_same_context():
    line = emit(TextFormatter(), "task submitted", reference="DSR-AB12-CD34", task_id=17, outcome="submitted")
    assert "WARNING tests.ops.logging task submitted" in line
    assert line.rstrip().endswith("outcome=submitted reference=DSR-AB12-CD34 task_id=17")


def test_an_email_in_the_message_arguments_or_context_is_redacted():
    line = emit(JsonFormatter(), "mail to %s failed", "Someone.Else+tag@Example.co.uk", recipient="x@example.org")
    assert "Someone.Else" not in line and "x@example.org" not in line
    entry = json.loads(line)
    assert entry["message"] == "mail to [email redacted] failed"
    assert entry["recipient"] == "[email redacted]"


def test_an_email_in_a_traceback_is_redacted():
    line = emit(TextFormatter(), "sending failed", exc=ValueError("bad address canary@example.org"))
    assert "canary@example.org" not in line
    assert "ValueError: bad address [email redacted]" in line


def test_a_bearer_token_is_redacted():
    assert redact("Authorization: Bearer abc.def-123") == "Authorization: Bearer [redacted]"


def test_objects_attached_to_records_are_left_out_of_the_context():
    # Django attaches the HttpRequest to its request log records; its repr holds the URL.
    class Request:
        def __repr__(self) -> str:
            return "<WSGIRequest: GET '/status/secret-link-token'>"

    line = emit(JsonFormatter(), "Not Found", request=Request(), status_code=404)
    entry = json.loads(line)
    assert "request" not in entry
    assert entry["status_code"] == 404


def test_the_console_handler_has_the_redaction_filter():
    handler = settings.LOGGING["handlers"]["console"]
    assert "redact" in handler["filters"]
    assert settings.LOGGING["filters"]["redact"]["()"] == "gdpr_requests.ops.logging.RedactFilter"
    # Django's own "django" logger writes through the same handler and nowhere else.
    assert settings.LOGGING["loggers"]["django"]["propagate"] is False
    assert settings.LOGGING["loggers"]["django"]["handlers"] == ["console"]


def log_through_settings(tmp_path, django_env: str, code: str) -> list[str]:
    """Run ``code`` in a fresh process configured by compliance.settings; return the lines it logged."""
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    env.update(
        DJANGO_ENV=django_env,
        DJANGO_SECRET_KEY="s" * 20 + "-random-enough-for-this-test-0123456789abcdef",
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        AUDIT_CHAIN_KEY="a-random-audit-chain-key-for-this-test-only",
        ALLOWED_HOSTS="example.com",
        REDIS_URL="redis://127.0.0.1:6379/0",  # production requires a shared cache; nothing connects to it here
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        VAR_DIR=str(tmp_path / "var"),
    )
    result = subprocess.run(
        [sys.executable, "-c", "import django, logging; django.setup(); " + code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "compliance.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr.strip().splitlines()


@pytest.mark.parametrize(("django_env", "expect_json"), [("production", True), ("development", False)])
def test_log_format_follows_the_environment(tmp_path, django_env, expect_json):
    code = (
        "logging.getLogger('gdpr_requests.test').warning('hello %s', 'who@example.org', extra={'reference': 'DSR-1'})"
    )
    line = log_through_settings(tmp_path, django_env, code)[-1]
    assert "who@example.org" not in line
    if expect_json:
        assert json.loads(line)["reference"] == "DSR-1"
    else:
        assert line.endswith("hello [email redacted] reference=DSR-1")


SIGNED = "eyJyIjoxLCJuIjoiNzk1OTdlNDgwZTgzOWJlMiJ9:1xYipo:GGrBHQoncxWwxwu0A4zZqDmcqxbrLru9ep8I-NDsUx0"


def test_the_development_server_log_shows_no_signed_link_and_no_encoded_email(tmp_path):
    # What runserver's request handler logs (django.server, '"%s" %s %s': request line, status, size).
    requests = [
        f"GET /verify/{SIGNED}/ HTTP/1.1",
        f"POST /status/{SIGNED}/withdraw/ HTTP/1.1",
        f"GET /download/{SIGNED}/?sent=1 HTTP/1.1",
        "GET /request/?from=getform%40example.org HTTP/1.1",
        "GET /request/?from=twice%2540example.org HTTP/1.1",
    ]
    code = "; ".join(
        f"logging.getLogger('django.server').info('\"%s\" %s %s', {line!r}, '200', '1234')" for line in requests
    )
    lines = log_through_settings(tmp_path, "development", code)[-len(requests) :]
    text = "\n".join(lines)
    assert SIGNED not in text and SIGNED[:20] not in text
    assert "getform" not in text and "twice" not in text and "example.org" not in text
    assert '"GET /verify/[token redacted]/ HTTP/1.1" 200 1234' in lines[0]
    assert '"POST /status/[token redacted]/withdraw/ HTTP/1.1" 200 1234' in lines[1]
    assert '"GET /download/[token redacted]/?sent=1 HTTP/1.1" 200 1234' in lines[2]
    assert "[email redacted]" in lines[3] and "[email redacted]" in lines[4]


def test_a_signed_link_in_an_error_report_is_redacted_in_json_too(tmp_path):
    code = f"logging.getLogger('django.request').warning('Not Found: %s', '/status/{SIGNED}/')"
    entry = json.loads(log_through_settings(tmp_path, "production", code)[-1])
    assert entry["message"] == "Not Found: /status/[token redacted]/"
