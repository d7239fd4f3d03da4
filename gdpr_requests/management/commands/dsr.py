"""``dsr``: enter, import, move and inspect data subject requests from the command line.

Every write goes through gdpr_requests.services, so the CLI obeys the same state table and leaves the same
audit events as the admin. Actions are recorded as the staff user named by ``--by USERNAME``, or else as the
system component ``cli``.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Callable
from datetime import date, datetime, time
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from gdpr_requests.audit.chain import Actor
from gdpr_requests.management import identity_cli
from gdpr_requests.management.cli import (
    CliCommand,
    actor_for,
    get_project,
    get_request,
    iso_date,
    write_json,
    write_table,
)
from gdpr_requests.models import (
    Channel,
    DataSubjectRequest,
    DisclosureType,
    MixpanelProject,
    MixpanelTask,
    Regulation,
    RejectionGround,
    RequestKind,
)
from gdpr_requests.requests import services, states
from gdpr_requests.requests.approvals import request_approval_record

# What staff can do to a request; the other transitions belong to the system (processing, expiry).
OPERATOR_ACTIONS = ("verify", "approve", "reject", "hold", "resume", "retry", "cancel")
IMPORT_REQUIRED = ("kind", "regulation", "email")
IMPORT_OPTIONAL = (
    "name",
    "distinct_ids",
    "projects",
    "received_at",
    "verified_by_staff",
    "disclosure_type",
    "language",
)
IMPORT_HELP = """\
Import requests from a UTF-8 CSV file with a header row (line 1).
Required columns: kind (access|deletion), regulation (gdpr|ccpa), email.
Optional columns: name; distinct_ids (several separated by ';'); projects (project names separated by ';',
default: every active project); received_at (YYYY-MM-DD: for a backlog, the deadline counts from it, default
today); verified_by_staff (how identity was checked: the request then starts 'verified'; without it an imported
request starts 'unverified', as the requester has not confirmed anything through us); disclosure_type (CCPA
access: Data, Categories or Sources); language (the subject's language for emails: en, de, fr, es, it, nl, pt
or pl; default en).
Valid rows are created; each invalid row is listed with its line number and reason, and the command exits 1.
"""


def _received_at(day: date) -> datetime:
    """Start of the day the request arrived, in settings.TIME_ZONE (deadlines count in whole days)."""
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_default_timezone())


def request_summary(dsr: DataSubjectRequest) -> dict[str, Any]:
    """The fields every listing shows; no personal data."""
    return {
        "reference": dsr.reference,
        "status": dsr.status,
        "kind": dsr.kind,
        "regulation": dsr.regulation,
        "channel": dsr.channel,
        "received_at": dsr.received_at,
        "due_at": dsr.due_at,
        "extended": dsr.extended_at is not None,
    }


def request_detail(dsr: DataSubjectRequest) -> dict[str, Any]:
    """Everything ``dsr show`` prints, including the requester (operators need to tell people apart)."""
    tasks = MixpanelTask.objects.filter(requests=dsr).select_related("project").order_by("created_at", "id")
    return {
        **request_summary(dsr),
        "disclosure_type": dsr.disclosure_type,
        "requester_name": dsr.requester_name,
        "requester_email": dsr.requester_email,
        "distinct_ids": dsr.distinct_ids,
        "projects": sorted(dsr.projects.values_list("name", flat=True)),
        "original_due_at": dsr.original_due_at,
        "extension_reason": dsr.extension_reason,
        "verified_at": dsr.verified_at,
        "identity_verification": dsr.identity_verification,
        "approved_at": dsr.approved_at,
        "closed_at": dsr.closed_at,
        "hold_reason": dsr.hold_reason,
        "rejection_reason": dsr.rejection_reason,
        "closing_note": dsr.closing_note,
        "allowed_actions": [a for a in states.allowed_actions(dsr.status) if a in OPERATOR_ACTIONS],
        "approval_blockers": services.approval_blockers(dsr) if dsr.status == states.VERIFIED else [],
        "tasks": [
            {
                "tracking_id": task.tracking_id,
                "remote_status": task.remote_status,
                "state": task.state,
                "kind": task.kind,
                "project": task.project.name,
                "attempts": task.attempts,
                "last_error": task.last_error,
                "next_attempt_at": task.next_attempt_at,
            }
            for task in tasks
        ],
    }


def _split(cell: str | None) -> list[str]:
    return [part.strip() for part in (cell or "").split(";") if part.strip()]


class Command(CliCommand):
    help = (
        "Data subject requests: create, import, approve, reject, cancel, extend, verify, set-ids, hold, resume, "
        "retry, show, list, purge."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

        def add(name: str, help_text: str, *, by: bool = True, ref: bool = True, **kwargs: Any) -> CommandParser:
            p = sub.add_parser(name, help=help_text, description=help_text, **kwargs)
            if ref:
                p.add_argument("reference", metavar="REF", help="The request reference, e.g. DSR-7K4Q-9XWM.")
            if by:
                p.add_argument("--by", metavar="USERNAME", help="The staff user acting (default: the system, 'cli').")
            p.add_argument("--json", action="store_true", help="Print JSON.")
            return p

        create = add("create", "Enter a request received by mail, phone or in person.", ref=False)
        create.add_argument("--kind", required=True, choices=RequestKind.values)
        create.add_argument("--regulation", required=True, choices=Regulation.values)
        create.add_argument("--email", required=True)
        create.add_argument("--name", default="")
        create.add_argument(
            "--distinct-id",
            dest="distinct_ids",
            action="extend",
            nargs="+",
            default=[],
            metavar="ID",
            help="Mixpanel distinct id(s) of the subject (repeatable).",
        )
        create.add_argument(
            "--project",
            dest="projects",
            action="extend",
            nargs="+",
            metavar="NAME",
            help="Project name(s) it applies to (default: every active project).",
        )
        create.add_argument(
            "--verified-by-staff",
            default="",
            metavar="HOW",
            help="How identity was checked; the request then starts 'verified'.",
        )
        create.add_argument(
            "--received-at",
            type=iso_date,
            metavar="YYYY-MM-DD",
            help="When it arrived (default: now); the deadline counts from it.",
        )
        create.add_argument(
            "--disclosure-type",
            choices=DisclosureType.values,
            help="CCPA access requests only (default Data).",
        )

        imp = add(
            "import",
            "Import requests from a CSV file.",
            ref=False,
            epilog=IMPORT_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        imp.add_argument("file", metavar="FILE.csv")
        imp.add_argument("--dry-run", action="store_true", help="Check every row, create nothing.")

        add(
            "approve",
            "Approve a verified request (verified → approved; a deletion whose projects need two approvers moves "
            "on the second, different approver's call); processing then starts.",
        )
        reject = add("reject", "Reject a request; the reason is kept and shown to the subject.")
        reject.add_argument("--reason", required=True, help="Free text for the requester.")
        reject.add_argument(
            "--ground",
            choices=RejectionGround.values,
            default=RejectionGround.OTHER,
            help="Why, in the law's words; the requester's email states it.",
        )
        cancel = add("cancel", "Withdraw a request (a deletion only while Mixpanel can still cancel it).")
        cancel.add_argument("--reason", default="")
        extend = add("extend", "Extend the deadline once, as the request's law allows.")
        extend.add_argument("--reason", required=True)
        verify = add("verify", "Record how the requester's identity was checked (unverified → verified).")
        verify.add_argument("--how", required=True)
        set_ids = add("set-ids", "Replace the subject's Mixpanel distinct ids (before approval).")
        set_ids.add_argument(
            "--distinct-id", dest="distinct_ids", action="extend", nargs="+", required=True, metavar="ID"
        )
        hold = add("hold", "Put an open request on hold.")
        hold.add_argument("--reason", required=True)
        resume = add("resume", "Resume a request that is on hold.")
        resume.add_argument("--note", default="", help="Why work resumes (kept as an internal staff note).")
        add("retry", "Retry a failed request (failed → approved).")

        add("show", "Show one request, its tasks at Mixpanel and what can be done next.", by=False)
        listing = add("list", "List requests (no personal data).", by=False, ref=False)
        listing.add_argument("--status", choices=sorted(states.ALL_STATES), help="Only requests in this state.")
        listing.add_argument("--overdue", action="store_true", help="Only open requests past their due date.")

        purge = add("purge", "Remove personal data of closed requests past the retention period.", by=False, ref=False)
        purge.add_argument("--dry-run", action="store_true", help="Only show which requests would be purged.")

        identity_cli.add_subcommands(add)  # resolve, candidates, accept-ids, reject-ids (gdpr_requests/identity)

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["subcommand"].replace("-", "_")
        handler: Callable[[dict[str, Any]], None] = getattr(self, f"do_{name}")
        try:
            handler(options)
        except (services.ServiceError, states.TransitionNotAllowed) as exc:
            raise CommandError(str(exc)) from None

    # --- intake ---------------------------------------------------------------------------------------
    def do_create(self, options: dict[str, Any]) -> None:
        actor = actor_for(options["by"])
        projects = [get_project(name) for name in options["projects"]] if options["projects"] else None
        dsr = services.request_create(
            kind=options["kind"],
            regulation=options["regulation"],
            email=options["email"],
            name=options["name"],
            distinct_ids=options["distinct_ids"],
            projects=projects,
            channel=Channel.STAFF,
            received_at=_received_at(options["received_at"]) if options["received_at"] else None,
            disclosure_type=options["disclosure_type"] or "",
            verified_by_staff=options["verified_by_staff"].strip(),
            actor=actor,
        )
        if options["json"]:
            write_json(self.stdout, request_summary(dsr))
        else:
            self.stdout.write(dsr.reference)

    def do_import(self, options: dict[str, Any]) -> None:
        actor = actor_for(options["by"])
        rows = self._read_import(options["file"])
        projects_by_name = {p.name.lower(): p for p in MixpanelProject.objects.all()}
        created: list[dict[str, Any]] = []
        invalid: list[dict[str, Any]] = []
        with transaction.atomic():
            for line, row in rows:
                try:
                    dsr = self._import_row(row, projects_by_name, actor)
                except services.ServiceError as exc:
                    invalid.append({"line": line, "reason": str(exc)})
                    continue
                created.append({"line": line, "reference": dsr.reference, "status": dsr.status})
            if options["dry_run"]:
                transaction.set_rollback(True)

        dry_run = options["dry_run"]
        verb = "would create" if dry_run else "created"
        if options["json"]:
            write_json(self.stdout, {"dry_run": dry_run, "created": created, "invalid": invalid})
        else:
            for item in created:
                self.stdout.write(f"line {item['line']}: {verb}" + ("" if dry_run else f" {item['reference']}"))
            for item in invalid:
                self.stderr.write(f"line {item['line']}: {item['reason']}")
        summary = f"{len(created)} request(s) {verb}, {len(invalid)} invalid row(s)."
        if invalid:
            raise CommandError(summary)
        if not options["json"]:
            self.stdout.write(summary)

    def _read_import(self, path: str) -> list[tuple[int, dict[str, str]]]:
        """The data rows with the line each starts on (the header is line 1); one error for an unusable file."""
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            raise CommandError(f"The file {path!r} does not exist.") from None
        except OSError as exc:
            raise CommandError(f"Cannot read {path!r}: {exc.strerror or exc}.") from None
        try:
            text = raw.decode("utf-8-sig")  # a spreadsheet's byte-order mark is harmless
        except UnicodeDecodeError as exc:
            raise CommandError(
                f"{path!r} is not UTF-8 text (first bad byte at offset {exc.start}); save it as CSV UTF-8."
            ) from None
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader, None)
            if not header or not any(cell.strip() for cell in header):
                raise CommandError(f"{path!r} is empty: it needs a header row ({', '.join(IMPORT_REQUIRED)}, ...).")
            columns = [cell.strip().lower() for cell in header]
            missing = [name for name in IMPORT_REQUIRED if name not in columns]
            if missing:
                raise CommandError(f"{path!r} lacks the required column(s) {', '.join(missing)} in its header row.")
            unknown = [name for name in columns if name and name not in (*IMPORT_REQUIRED, *IMPORT_OPTIONAL)]
            if unknown:
                raise CommandError(
                    f"{path!r} has unknown column(s) {', '.join(unknown)}; "
                    f"known: {', '.join((*IMPORT_REQUIRED, *IMPORT_OPTIONAL))}."
                )
            rows: list[tuple[int, dict[str, str]]] = []
            line = reader.line_num + 1
            for cells in reader:
                if any(cell.strip() for cell in cells):
                    if len(cells) > len(columns):
                        values = {"__extra__": "yes"}
                    else:
                        values = {name: cells[i].strip() if i < len(cells) else "" for i, name in enumerate(columns)}
                    rows.append((line, values))
                line = reader.line_num + 1
        except csv.Error as exc:
            raise CommandError(f"{path!r} is not valid CSV near line {reader.line_num}: {exc}.") from None
        return rows

    def _import_row(self, row: dict[str, str], projects_by_name: dict[str, MixpanelProject], actor: Actor) -> Any:
        if "__extra__" in row:
            raise services.ServiceError("the row has more cells than the header has columns")
        for name in IMPORT_REQUIRED:
            if not row.get(name):
                raise services.ServiceError(f"{name} is empty")
        received_at = None
        if row.get("received_at"):
            try:
                received_at = _received_at(date.fromisoformat(row["received_at"]))
            except ValueError:
                raise services.ServiceError(f"received_at {row['received_at']!r} is not a date (YYYY-MM-DD)") from None
        projects = None
        if row.get("projects"):
            projects = []
            for name in _split(row["projects"]):
                project = projects_by_name.get(name.lower())
                if project is None:
                    raise services.ServiceError(f"unknown project {name!r}")
                projects.append(project)
        # Each row in its own savepoint, so one bad row leaves the others alone.
        with transaction.atomic():
            return services.request_create(
                kind=row["kind"].lower(),
                regulation=row["regulation"].lower(),
                email=row["email"],
                name=row.get("name", ""),
                distinct_ids=_split(row.get("distinct_ids")),
                projects=projects,
                channel=Channel.IMPORT,
                received_at=received_at,
                disclosure_type=row.get("disclosure_type", ""),
                verified_by_staff=row.get("verified_by_staff", ""),
                language=row.get("language") or "",
                actor=actor,
            )

    # --- transitions ----------------------------------------------------------------------------------
    def _move(self, options: dict[str, Any], service: Callable[..., DataSubjectRequest], **kwargs: Any) -> None:
        dsr = get_request(options["reference"])
        actor = actor_for(options["by"])
        before = dsr.status
        dsr = service(request=dsr, actor=actor, **kwargs)
        dsr.refresh_from_db()
        if options["json"]:
            write_json(self.stdout, request_summary(dsr))
        else:
            self.stdout.write(f"{dsr.reference}: {before} -> {dsr.status} (due {dsr.due_at})")

    def do_approve(self, options: dict[str, Any]) -> None:
        """Record one approval; a deletion needing two approvers moves on the second, different one."""
        dsr = get_request(options["reference"])
        before = dsr.status
        outcome = request_approval_record(request=dsr, actor=actor_for(options["by"]))
        dsr.refresh_from_db()
        if options["json"]:
            write_json(
                self.stdout,
                {**request_summary(dsr), "approvals": outcome.approvals, "required": outcome.required},
            )
        elif outcome.approved:
            self.stdout.write(f"{dsr.reference}: {before} -> {dsr.status} (due {dsr.due_at})")
        else:
            self.stdout.write(
                f"{dsr.reference}: approval {outcome.approvals} of {outcome.required} recorded; "
                f"{outcome.remaining} more from a different staff member needed ({dsr.status})"
            )

    def do_reject(self, options: dict[str, Any]) -> None:
        self._move(options, services.request_reject, reason=options["reason"], ground=options["ground"])

    def do_cancel(self, options: dict[str, Any]) -> None:
        self._move(options, services.request_cancel, reason=options["reason"])

    def do_hold(self, options: dict[str, Any]) -> None:
        self._move(options, services.request_hold, reason=options["reason"])

    def do_resume(self, options: dict[str, Any]) -> None:
        self._move(options, services.request_resume, note=options["note"])

    def do_retry(self, options: dict[str, Any]) -> None:
        self._move(options, services.request_retry)

    def do_verify(self, options: dict[str, Any]) -> None:
        self._move(options, services.request_record_identity, how=options["how"])

    def do_extend(self, options: dict[str, Any]) -> None:
        dsr = get_request(options["reference"])
        before = dsr.due_at
        dsr = services.request_extend(request=dsr, reason=options["reason"], actor=actor_for(options["by"]))
        if options["json"]:
            write_json(self.stdout, request_summary(dsr))
        else:
            self.stdout.write(f"{dsr.reference}: due {before} -> {dsr.due_at} ({dsr.status})")

    def do_set_ids(self, options: dict[str, Any]) -> None:
        dsr = get_request(options["reference"])
        dsr = services.request_set_distinct_ids(
            request=dsr, distinct_ids=options["distinct_ids"], actor=actor_for(options["by"])
        )
        if options["json"]:
            write_json(self.stdout, {**request_summary(dsr), "distinct_id_count": len(dsr.distinct_ids)})
        else:
            self.stdout.write(f"{dsr.reference}: {len(dsr.distinct_ids)} distinct id(s) set ({dsr.status})")

    # --- reading --------------------------------------------------------------------------------------
    def do_show(self, options: dict[str, Any]) -> None:
        detail = request_detail(get_request(options["reference"]))
        if options["json"]:
            write_json(self.stdout, detail)
            return
        out = self.stdout.write
        out(f"{detail['reference']}  {detail['status']}")
        out(
            f"  kind:        {detail['kind']} ({detail['regulation']}"
            + (f", disclosure {detail['disclosure_type']})" if detail["disclosure_type"] else ")")
        )
        out(f"  requester:   {detail['requester_name'] or '-'} <{detail['requester_email']}>")
        out(f"  channel:     {detail['channel']}, received {detail['received_at']:%Y-%m-%d %H:%M}")
        due = f"  due:         {detail['due_at']}"
        if detail["extended"]:
            due += f" (extended from {detail['original_due_at']}: {detail['extension_reason']})"
        out(due)
        out(f"  identity:    {detail['identity_verification'] or 'not verified'}")
        out(f"  distinct ids: {', '.join(detail['distinct_ids']) or '-'}")
        out(f"  projects:    {', '.join(detail['projects']) or '-'}")
        for label, key in (("on hold", "hold_reason"), ("rejected", "rejection_reason"), ("note", "closing_note")):
            if detail[key]:
                out(f"  {label + ':':<12} {detail[key]}")
        out(f"  next:        {', '.join(detail['allowed_actions']) or 'nothing (closed)'}")
        if detail["approval_blockers"]:
            out(f"  cannot approve: {'; '.join(detail['approval_blockers'])}")
        if detail["tasks"]:
            out("  Mixpanel tasks:")
            write_table(
                self.stdout,
                ["    PROJECT", "KIND", "TRACKING ID", "REMOTE", "STATE", "ATTEMPTS"],
                [
                    [
                        f"    {t['project']}",
                        t["kind"],
                        t["tracking_id"] or "-",
                        t["remote_status"] or "-",
                        t["state"],
                        t["attempts"],
                    ]
                    for t in detail["tasks"]
                ],
            )
        else:
            out("  Mixpanel tasks: none yet")

    def do_list(self, options: dict[str, Any]) -> None:
        requests = DataSubjectRequest.objects.order_by("due_at", "id")
        if options["status"]:
            requests = requests.filter(status=options["status"])
        if options["overdue"]:
            requests = requests.filter(status__in=states.OPEN_STATES, due_at__lt=timezone.localdate())
        requests = requests.only(
            "reference", "status", "kind", "regulation", "channel", "received_at", "due_at", "extended_at"
        )
        summaries = [request_summary(dsr) for dsr in requests.iterator(chunk_size=2000)]
        if options["json"]:
            write_json(self.stdout, summaries)
            return
        if not summaries:
            self.stdout.write("No requests match.")
            return
        write_table(
            self.stdout,
            ["REFERENCE", "STATUS", "KIND", "REG", "CHANNEL", "RECEIVED", "DUE"],
            [
                [
                    s["reference"],
                    s["status"],
                    s["kind"],
                    s["regulation"],
                    s["channel"],
                    timezone.localtime(s["received_at"]).date(),
                    f"{s['due_at']}{' (ext)' if s['extended'] else ''}",
                ]
                for s in summaries
            ],
        )

    # --- retention ------------------------------------------------------------------------------------
    def do_purge(self, options: dict[str, Any]) -> None:
        try:
            from gdpr_requests.requests.retention import purge_due
        except ImportError:
            raise CommandError(
                "Retention is not part of this installation (gdpr_requests.retention is missing)."
            ) from None
        references = list(purge_due(dry_run=options["dry_run"]))
        if options["json"]:
            write_json(self.stdout, {"dry_run": options["dry_run"], "references": references})
            return
        verb = "Would purge" if options["dry_run"] else "Purged"
        self.stdout.write(f"{verb} personal data of {len(references)} request(s)" + (":" if references else "."))
        for reference in references:
            self.stdout.write(f"  {reference}")

    # --- identity lookups in Mixpanel (gdpr_requests/management/identity_cli.py) ---------------------------------------
    def do_resolve(self, options: dict[str, Any]) -> None:
        identity_cli.run(self, options)

    do_candidates = do_accept_ids = do_reject_ids = do_resolve
