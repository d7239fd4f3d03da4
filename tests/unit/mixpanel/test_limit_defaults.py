"""The shipped defaults that keep us inside Mixpanel's limits (MIXPANEL_GDPR_API.md "Limits and timing": 1 request
per second for all GDPR API calls; poll slowly; back off for hours). Read from a fresh import of the settings in a
subprocess with no environment and no .env file, so neither a test's overrides nor a developer's .env can hide a
changed default. Changing one of these is a decision to make here, on purpose, with Mixpanel's limits in mind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

PINNED = {
    # At most one call per second per project and credential: Mixpanel's documented limit, answered with 429.
    "MIXPANEL_MIN_INTERVAL_SECONDS": 1.0,
    # A slot is held until its call is answered, for up to interval + 2 x timeout + slack (mixpanel/ratelimit.py).
    "MIXPANEL_HTTP_TIMEOUT_SECONDS": 30.0,
    # Retries: capped exponential backoff, 30 s doubling to 6 h, 12 attempts in a row at most.
    "MIXPANEL_BACKOFF_BASE_SECONDS": 30.0,
    "MIXPANEL_BACKOFF_MAX_SECONDS": 21600.0,
    "MIXPANEL_MAX_ATTEMPTS": 12,
    # Polling: 5 minutes doubling to 6 hours ("poll slowly, never in a tight loop").
    "GDPR_POLL_INITIAL_SECONDS": 300.0,
    "GDPR_POLL_MAX_SECONDS": 21600.0,
    # The sweep hands a project at most interval/min-interval tasks per round (dispatch.per_project_budget).
    "GDPR_DISPATCH_INTERVAL_SECONDS": 5.0,
    "GDPR_STEP_LEASE_SECONDS": 300.0,
    "GDPR_DISPATCH_LEASE_SECONDS": 60.0,
    "GDPR_FAILURE_SPLIT_WAYS": 8,
}

READ_DEFAULTS = f"""
import json, environ
environ.Env.read_env = staticmethod(lambda *args, **kwargs: None)  # no .env file: the code's defaults only
import compliance.settings as s
print(json.dumps({{name: getattr(s, name) for name in {sorted(PINNED)!r}}}))
"""


@pytest.fixture(scope="module")
def shipped() -> dict[str, object]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", READ_DEFAULTS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_shipped_default_is_pinned(shipped, name):
    assert shipped[name] == PINNED[name], f"{name} default changed: check it against Mixpanel's limits first"


def test_the_defaults_never_call_faster_than_once_a_second(shipped):
    assert shipped["MIXPANEL_MIN_INTERVAL_SECONDS"] >= 1.0
    assert shipped["GDPR_POLL_INITIAL_SECONDS"] >= 60 and shipped["GDPR_POLL_MAX_SECONDS"] >= 3600
    assert shipped["GDPR_STEP_LEASE_SECONDS"] > 2 * shipped["MIXPANEL_HTTP_TIMEOUT_SECONDS"]
