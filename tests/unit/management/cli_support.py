"""Running operator commands in tests: capture what they print, and what they refuse."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError


def run(*args: str) -> tuple[str, str]:
    """Run a management command; return (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def run_json(*args: str) -> Any:
    out, _err = run(*args)
    return json.loads(out)


def refused(*args: str) -> tuple[str, str]:
    """Run a command that must fail with a CommandError; return (its message, what it wrote to stderr)."""
    err = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command(*args, stdout=io.StringIO(), stderr=err)
    message = str(info.value)
    assert "\n" not in message.strip(), f"the error should be one line: {message!r}"
    assert "Traceback" not in message
    return message, err.getvalue()
