"""Operator commands for identity lookups, shared by ``manage.py identity`` and ``manage.py dsr``:
``resolve REF``, ``candidates REF [--json]``, ``accept-ids REF (--distinct-id ID ... | --all)``,
``reject-ids REF --distinct-id ID ...``; and the Query API options of ``mixpanel_project update``.

Candidates' ids are personal data: ``candidates`` prints them for the operator, nothing logs them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from gdpr_requests.identity.services import (
    candidate_accept,
    candidate_reject,
    candidates_for,
    credential_warning,
    lookup_summary,
    request_resolve_now,
)
from gdpr_requests.management.cli import actor_for, get_request, read_secret_file, write_json, write_table
from gdpr_requests.models import IdentityLookup

SUBCOMMANDS = ("resolve", "candidates", "accept-ids", "reject-ids")


def add_subcommands(add: Callable[..., CommandParser]) -> None:
    """Add the subcommands through ``add(name, help, by=True)``, which adds REF, --by and --json."""
    add("resolve", "Look the request's email up in Mixpanel again now (each project with Query API access).")
    add("candidates", "The Mixpanel profiles found for the request's email, and the state of its lookups.", by=False)
    accept = add("accept-ids", "Accept candidates: their distinct ids join the request's (before approval).")
    chosen = accept.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--distinct-id", dest="distinct_ids", action="extend", nargs="+", metavar="ID")
    chosen.add_argument("--all", action="store_true", help="Every candidate awaiting review.")
    reject = add("reject-ids", "Reject candidates (an accepted one leaves the request's distinct ids again).")
    reject.add_argument("--distinct-id", dest="distinct_ids", action="extend", nargs="+", required=True, metavar="ID")


def run(command: BaseCommand, options: dict[str, Any]) -> None:
    """Run one of SUBCOMMANDS; ServiceError is the caller's to turn into a CommandError."""
    name = options["subcommand"]
    dsr = get_request(options["reference"])
    out = command.stdout
    if name == "candidates":
        rows = candidates_for(dsr)
        if options["json"]:
            write_json(out, rows)
            return
        lookups = IdentityLookup.objects.filter(request=dsr).select_related("project").order_by("project__name")
        for lookup in lookups:
            out.write(f"{dsr.reference}: {lookup_summary(lookup)}")
        if not lookups:
            out.write(f"{dsr.reference}: no Mixpanel lookup yet.")
        if rows:
            write_table(
                out,
                ["DISTINCT ID", "PROJECT", "MATCHED", "LAST SEEN", "STATE"],
                [[r["distinct_id"], r["project"], r["matched_property"], r["last_seen"], r["state"]] for r in rows],
            )
        return
    actor = actor_for(options.get("by"))
    if name == "resolve":
        queued = request_resolve_now(request=dsr, actor=actor)
        result: dict[str, Any] = {"reference": dsr.reference, "lookups_queued": queued}
        message = f"{dsr.reference}: {queued} lookup(s) queued; the next resolution tick asks Mixpanel."
    elif name == "accept-ids":
        decided = candidate_accept(
            request=dsr, distinct_ids=None if options["all"] else options["distinct_ids"], actor=actor
        )
        result = {"reference": dsr.reference, "accepted": len(decided), "distinct_id_count": len(dsr.distinct_ids)}
        message = (
            f"{dsr.reference}: accepted {len(decided)} candidate(s); it has {len(dsr.distinct_ids)} distinct id(s)."
        )
    else:
        decided = candidate_reject(request=dsr, distinct_ids=options["distinct_ids"], actor=actor)
        result = {"reference": dsr.reference, "rejected": len(decided), "distinct_id_count": len(dsr.distinct_ids)}
        message = (
            f"{dsr.reference}: rejected {len(decided)} candidate(s); it has {len(dsr.distinct_ids)} distinct id(s)."
        )
    if options["json"]:
        write_json(out, result)
    else:
        out.write(message)


# --- mixpanel_project update -----------------------------------------------------------------------------


def _on_off(value: str) -> bool:
    import argparse

    lowered = value.strip().lower()
    if lowered in ("on", "yes", "true"):
        return True
    if lowered in ("off", "no", "false"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r}: use on or off")


def add_query_access_options(parser: CommandParser) -> None:
    """The Query API options of ``mixpanel_project update``."""
    parser.add_argument("--service-account-username", metavar="U", help="Query API service account username.")
    parser.add_argument(
        "--service-account-secret-file", metavar="F", help="File holding the service account secret ('-': stdin)."
    )
    parser.add_argument(
        "--identity-property",
        dest="identity_properties",
        action="extend",
        nargs="+",
        metavar="P",
        help="Profile property holding an email (repeatable; replaces the list; default $email).",
    )
    parser.add_argument(
        "--auto-accept-single-match",
        type=_on_off,
        metavar="on|off",
        help="Accept the only candidate without review when exactly one profile matches.",
    )


def query_access_changes(options: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments for project_set_query_access that the options ask for."""
    changes: dict[str, Any] = {}
    if options.get("service_account_username") is not None:
        changes["username"] = options["service_account_username"]
    if options.get("service_account_secret_file"):
        changes["secret"] = read_secret_file(options["service_account_secret_file"], "service account secret")
    if options.get("identity_properties"):
        changes["identity_properties"] = options["identity_properties"]
    if options.get("auto_accept_single_match") is not None:
        changes["auto_accept_single_match"] = options["auto_accept_single_match"]
    return changes


def query_access_summary(project: Any) -> str:
    """One line about a project's Query API access for the operator (no secret)."""
    who = f"service account {project.query_username}" if project.query_username else "no service account"
    properties = ", ".join(project.identity_properties or ["$email"])
    policy = "on" if project.auto_accept_single_match else "off"
    line = f"Profile lookups: {who}; email properties {properties}; auto-accept a single match {policy}."
    warning = credential_warning(project)
    if project.lookup_paused_at:
        line += f" PAUSED: {project.lookup_paused_reason}."
    return f"{line} {warning}".strip()
