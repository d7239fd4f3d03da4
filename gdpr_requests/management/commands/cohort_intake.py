"""``cohort_intake add|list|rotate-password|disable|approve-pending``: Mixpanel cohort syncs as an intake channel.

``add`` and ``rotate-password`` print the password once: it is kept only hashed. Type the URL, the username and
the password into Mixpanel (Data → Destinations → Webhook, Basic Authentication); see docs/cohorts.md.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count

from gdpr_requests.cohorts import services
from gdpr_requests.management.cli import actor_for, get_project, write_json, write_table
from gdpr_requests.models import CohortIdentity, CohortIntake, Regulation, RequestKind
from gdpr_requests.requests.services import ServiceError


def _get_intake(name: str) -> CohortIntake:
    found = CohortIntake.objects.select_related("project").filter(name__iexact=name.strip()).first()
    if found is None:
        known = ", ".join(CohortIntake.objects.values_list("name", flat=True)) or "none yet"
        raise CommandError(f"No cohort intake named {name.strip()!r} (known: {known}).")
    return found


def intake_summary(intake: CohortIntake) -> dict[str, Any]:
    """What operators may see of an intake: never a password or its hash."""
    return {
        "name": intake.name,
        "project": intake.project.name,
        "kind": intake.kind,
        "regulation": intake.regulation,
        "identity": intake.identity,
        "auto_approve": intake.auto_approve,
        "auto_approval_blocked": services.auto_approval_blocked(intake),  # "" when auto-approval applies
        "is_active": intake.is_active,
        "webhook_url": services.webhook_url(intake),
        "username": intake.username,
        "password_changed_at": intake.password_changed_at,
        "previous_password_valid_until": intake.previous_valid_until,
        "auth_failure_count": intake.auth_failure_count,
        "last_sync_at": intake.last_sync_at,
    }


class Command(BaseCommand):
    help = "Configure Mixpanel cohort sync intakes: add, list, rotate-password, disable, approve-pending."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="subcommand", required=True, metavar="{add,list,rotate-password,disable,approve-pending}"
        )
        add = sub.add_parser("add", help="Create an intake and print its webhook URL, username and password.")
        add.add_argument("--name", help="A name for people (unique; default: PROJECT KIND).")
        add.add_argument("--project", required=True, metavar="NAME", help="The Mixpanel project of the cohort.")
        add.add_argument("--kind", required=True, choices=RequestKind.values)
        add.add_argument("--regulation", required=True, choices=Regulation.values)
        add.add_argument("--identity", default=CohortIdentity.PRODUCT_LOGIN, choices=CohortIdentity.values)
        add.add_argument("--auto-approve", action="store_true", help="Approve without staff once verified.")
        add.add_argument("--by", metavar="USERNAME", help="Record the change as made by this staff user.")
        add.add_argument("--json", action="store_true")

        listing = sub.add_parser("list", help="List intakes (no passwords).")
        listing.add_argument("--json", action="store_true")

        rotate = sub.add_parser("rotate-password", help="Issue a new password; the old one works for a grace period.")
        rotate.add_argument("--name", required=True)
        rotate.add_argument("--by", metavar="USERNAME")
        rotate.add_argument("--json", action="store_true")

        disable = sub.add_parser("disable", help="Stop taking messages (Mixpanel gets 404 and pauses the sync).")
        disable.add_argument("--name", required=True)
        disable.add_argument("--by", metavar="USERNAME")

        pending = sub.add_parser("approve-pending", help="Approve the verified requests of an auto-approving intake.")
        pending.add_argument("--name", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, "_" + options["subcommand"].replace("-", "_"))(options)
        except ServiceError as exc:
            raise CommandError(str(exc)) from None

    def _add(self, options: dict[str, Any]) -> None:
        project = get_project(options["project"])
        name = options["name"] or f"{project.name} {options['kind']}"
        intake, password = services.cohort_intake_create(
            name=name,
            project=project,
            kind=options["kind"],
            regulation=options["regulation"],
            identity=options["identity"],
            auto_approve=options["auto_approve"],
            actor=actor_for(options["by"], component="cli:cohort_intake"),
        )
        self._print_credentials(intake, password, json_output=options["json"])
        blocked = services.auto_approval_blocked(intake)
        if blocked:
            self.stderr.write(f"Warning: {blocked}")

    def _rotate_password(self, options: dict[str, Any]) -> None:
        intake = _get_intake(options["name"])
        password = services.cohort_intake_rotate_password(
            intake=intake, actor=actor_for(options["by"], component="cli:cohort_intake")
        )
        self._print_credentials(intake, password, json_output=options["json"])
        if not options["json"]:
            self.stdout.write(f"The old password keeps working until {intake.previous_valid_until:%Y-%m-%d %H:%M} UTC.")

    def _print_credentials(self, intake: CohortIntake, password: str, *, json_output: bool) -> None:
        if json_output:
            write_json(self.stdout, {**intake_summary(intake), "password": password})
            return
        self.stdout.write(f"Cohort intake {intake.name!r} ({intake.kind}, {intake.regulation}, {intake.identity})")
        self.stdout.write(f"  webhook URL: {services.webhook_url(intake)}")
        self.stdout.write(f"  username:    {intake.username}")
        self.stdout.write(f"  password:    {password}")
        self.stdout.write("The password is shown this once. In Mixpanel: Data → Destinations → Webhook, Basic auth.")

    def _list(self, options: dict[str, Any]) -> None:
        intakes = list(
            CohortIntake.objects.select_related("project").annotate(request_count=Count("members")).order_by("name")
        )
        if options["json"]:
            write_json(self.stdout, [{**intake_summary(i), "request_count": i.request_count} for i in intakes])
            return
        write_table(
            self.stdout,
            [
                "name",
                "project",
                "kind",
                "regulation",
                "identity",
                "auto",
                "active",
                "requests",
                "auth failures",
                "last sync",
            ],
            [
                [
                    i.name,
                    i.project.name,
                    i.kind,
                    i.regulation,
                    i.identity,
                    ("blocked" if services.auto_approval_blocked(i) else "yes") if i.auto_approve else "no",
                    "yes" if i.is_active else "no",
                    i.request_count,
                    i.auth_failure_count,
                    f"{i.last_sync_at:%Y-%m-%d %H:%M}" if i.last_sync_at else "-",
                ]
                for i in intakes
            ],
        )

    def _disable(self, options: dict[str, Any]) -> None:
        intake = _get_intake(options["name"])
        services.cohort_intake_disable(intake=intake, actor=actor_for(options["by"], component="cli:cohort_intake"))
        self.stdout.write(f"Disabled {intake.name}: Mixpanel's next sync gets 404 and pauses.")

    def _approve_pending(self, options: dict[str, Any]) -> None:
        intake = _get_intake(options["name"])
        count = services.cohort_intake_approve_pending(intake=intake)
        self.stdout.write(f"Approved {count} request(s) of {intake.name}.")
