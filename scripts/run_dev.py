"""`make run`: the development web server and one Celery worker (embedded beat), stopped together.

Ctrl-C or SIGTERM reaches this launcher; it forwards one SIGTERM to each child's main process (a Celery worker's
warm shutdown; runserver's reloader stops the server it runs), waits for them, sweeps anything left in their
process groups, and exits 0. Each child leads its own process group, so the terminal's Ctrl-C does not reach
it a second time (a second signal turns Celery's warm shutdown into a cold one). When a child stops on its own
(the port is taken, say), the other is stopped the same way and the launcher exits 1.

    python scripts/run_dev.py [--port 8000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STOP_SECONDS = float(os.environ.get("RUN_DEV_STOP_SECONDS", "30"))


def commands(port: int) -> dict[str, list[str]]:
    python = sys.executable
    celery = str(Path(python).with_name("celery"))
    return {
        "worker": [celery, "-A", "compliance", "worker", "-B", "--loglevel=INFO", "--concurrency=2"],
        "web": [python, "manage.py", "runserver", f"127.0.0.1:{port}"],
    }


def stop(children: dict[str, subprocess.Popen]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for child in children.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
    for name, child in children.items():
        if child.poll() is None:
            print(f"run_dev: {name} did not stop within {STOP_SECONDS:.0f} s; killing it", file=sys.stderr)
        # Also the prefork pool or the reloaded server, should one outlive its main process.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)

    requested: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        requested.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children = {
        name: subprocess.Popen(command, cwd=ROOT, start_new_session=True)
        for name, command in commands(args.port).items()
    }
    try:
        while not requested and all(child.poll() is None for child in children.values()):
            time.sleep(0.2)
    finally:
        stop(children)
    if requested:
        print("run_dev: stopped.", file=sys.stderr)
        return 0
    exited = {name: child.returncode for name, child in children.items()}
    print(f"run_dev: a process stopped on its own ({exited}); stopped the rest.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
