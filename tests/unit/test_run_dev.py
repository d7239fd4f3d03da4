"""`make run`'s launcher (scripts/run_dev.py), for real: runserver and a Celery worker with embedded beat on the
embedded default (SQLite, filesystem broker) in a temporary folder, then SIGTERM, as a terminal or a process
manager sends. It used to end in a segmentation fault of the shell and thousands of "Warm shutdown" lines (a
trap that re-signalled its own process group for ever). Needs no external service, so it runs everywhere."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(90)
def test_sigterm_stops_the_web_server_and_the_worker_once_and_exits_0(tmp_path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DSR_", "MIXPANEL_", "GDPR_", "CELERY_", "DATABASE_", "REDIS_"))
    }
    env.update(DJANGO_SETTINGS_MODULE="compliance.settings", VAR_DIR=str(tmp_path / "var"), RUN_DEV_STOP_SECONDS="20")
    output = tmp_path / "run.log"
    with output.open("wb") as log:
        launcher = subprocess.Popen(
            [sys.executable, "scripts/run_dev.py", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            text = output.read_text(errors="replace")
            web_up = False
            if listening(port):
                with contextlib.suppress(requests.RequestException):
                    web_up = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
            if web_up and " ready." in text:
                break
            assert launcher.poll() is None, f"the launcher exited early:\n{text[-3000:]}"
            assert time.monotonic() < deadline, f"not up after {STARTUP_SECONDS} s:\n{text[-3000:]}"
            time.sleep(0.5)

        launcher.send_signal(signal.SIGTERM)
        returncode = launcher.wait(timeout=40)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=10)

    text = output.read_text(errors="replace")
    assert returncode == 0, text[-3000:]
    assert "Segmentation fault" not in text
    assert text.count("Warm shutdown") < 10, text[-3000:]
    assert not listening(port), "the web server outlived the launcher"
