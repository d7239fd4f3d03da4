"""Helpers shared by the operator commands (dsr, mixpanel_project, audit): a base command, argument types,
look-ups, output.

Every failure an operator can cause becomes a CommandError with one clear line (Django prints it on stderr and
exits 1); argparse type errors read the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from datetime import date, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from gdpr_requests.audit.chain import Actor
from gdpr_requests.models import DataSubjectRequest, MixpanelProject


class CliCommand(BaseCommand):
    """An operator command whose output may be piped into ``head`` or ``less``.

    When the reader stops early (``dsr show ... | head -3``) the command stops quietly, as Unix tools do, with the
    exit status of a process ended by SIGPIPE, instead of a BrokenPipeError traceback.
    """

    def run_from_argv(self, argv: list[str]) -> None:
        try:
            super().run_from_argv(argv)
            # Output to a pipe is block-buffered: flush here, where a closed pipe can still be handled.
            sys.stdout.flush()
        except BrokenPipeError:
            # Python's own flush at exit would fail again and print "Exception ignored": point stdout at nothing.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            sys.exit(128 + signal.SIGPIPE)


def iso_date(value: str) -> date:
    """argparse type: a calendar date written YYYY-MM-DD."""
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (use YYYY-MM-DD)") from None


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be 1 or more")
    return number


def actor_for(username: str | None, *, component: str = "cli") -> Actor:
    """Actor.staff(user) for ``--by USERNAME``, else the system acting as ``component``."""
    if not username:
        return Actor.system(component)
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"No user named {username!r}.")
    if not user.is_active:
        raise CommandError(f"User {username!r} is deactivated.")
    if not user.has_perm("gdpr_requests.work_request"):
        raise CommandError(f"User {username!r} may not work privacy requests (not in the 'Privacy staff' group).")
    return Actor.staff(user)


def get_request(reference: str) -> DataSubjectRequest:
    normalised = reference.strip().upper()
    found = DataSubjectRequest.objects.filter(reference=normalised).first()
    if found is None:
        raise CommandError(f"No request with reference {reference.strip()!r}.")
    return found


def get_project(name: str) -> MixpanelProject:
    found = MixpanelProject.objects.filter(name__iexact=name.strip()).first()
    if found is None:
        known = ", ".join(MixpanelProject.objects.values_list("name", flat=True)) or "none yet"
        raise CommandError(f"No Mixpanel project named {name.strip()!r} (known: {known}).")
    return found


def read_secret_file(path: str, what: str) -> str:
    """A secret from a file (``-`` for standard input), so it stays out of shell history and ``ps``."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except FileNotFoundError:
        raise CommandError(f"The {what} file {path!r} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"Cannot read the {what} file {path!r}: {exc.__class__.__name__}.") from None
    secret = text.strip()
    if not secret:
        raise CommandError(f"The {what} file {path!r} is empty.")
    return secret


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def write_json(stdout: OutputWrapper, data: Any) -> None:
    stdout.write(json.dumps(data, indent=2, default=_default, ensure_ascii=False))


def write_table(stdout: OutputWrapper, headers: list[str], rows: list[list[Any]]) -> None:
    """A plain aligned text table (no colours: it is read in terminals and pasted into tickets)."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
