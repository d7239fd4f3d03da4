"""``mixpanel_project add|update|list|check``: register Mixpanel projects and look after their credentials.

Secrets are never printed. Prefer ``--oauth-token-file`` (``-`` reads standard input) to ``--oauth-token``,
which leaves the token in the shell history and in the process list.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.utils import timezone

from gdpr_requests.cohorts.services import auto_approval_blocked, auto_approval_blocked_intakes
from gdpr_requests.crypto import DecryptionError
from gdpr_requests.identity.services import project_check_query, project_set_query_access
from gdpr_requests.management import identity_cli
from gdpr_requests.management.cli import (
    CliCommand,
    actor_for,
    get_project,
    iso_date,
    positive_int,
    read_secret_file,
    write_json,
    write_table,
)
from gdpr_requests.models import MixpanelProject, Residency
from gdpr_requests.projects.services import project_create, project_update
from gdpr_requests.requests.services import ServiceError


def _add_token_options(parser: CommandParser, *, required: bool) -> None:
    token = parser.add_mutually_exclusive_group(required=required)
    token.add_argument("--oauth-token-file", metavar="FILE", help="File holding the GDPR OAuth token ('-': stdin).")
    token.add_argument("--oauth-token", metavar="TOKEN", help="The GDPR OAuth token (visible in shell history).")


def project_summary(project: MixpanelProject, *, has_api_secret: bool) -> dict[str, Any]:
    """What operators may see of a project: no token, no secret, no owner email."""
    return {
        "name": project.name,
        "mixpanel_project_id": project.mixpanel_project_id,
        "residency": project.residency,
        "base_url_overridden": bool(project.base_url_override),
        "is_active": project.is_active,
        "deletion_batch_size": project.deletion_batch_size,
        "deletion_approvals_required": project.deletion_approvals_required,
        "token_expires_on": project.token_expires_on,
        "days_until_token_expiry": project.days_until_token_expiry,
        "has_api_secret": has_api_secret,
        "credential_status": project.credential_status,
        "credential_checked_at": project.credential_checked_at,
        "credential_error": project.credential_error,
    }


class Command(CliCommand):
    help = "Register Mixpanel projects (add, update), list them, and check their GDPR API credentials."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{add,update,list,check}")

        add = sub.add_parser("add", help="Register a project.")
        add.add_argument("--name", required=True, help="A name for people (unique).")
        add.add_argument("--project-id", required=True, help="Mixpanel's numeric project id.")
        add.add_argument("--token", required=True, help="The project token (public ingestion token).")
        _add_token_options(add, required=True)
        add.add_argument(
            "--token-expires",
            required=True,
            type=iso_date,
            metavar="YYYY-MM-DD",
            help="When the OAuth token expires (one year after it was created).",
        )
        add.add_argument("--residency", required=True, choices=Residency.values)
        add.add_argument("--base-url", default="", metavar="URL", help="Override the API base URL (sandbox, proxy).")
        add.add_argument("--batch-size", type=positive_int, default=1999, help="Ids per deletion task (1-2000).")
        add.add_argument(
            "--api-secret-file", metavar="FILE", help="File holding the API secret (opens retrieval ZIPs)."
        )
        add.add_argument("--owner-email", default="", help="The Mixpanel user who created the OAuth token.")
        add.add_argument("--by", metavar="USERNAME", help="Record the change as made by this staff user.")
        add.add_argument("--json", action="store_true", help="Print the project as JSON.")

        update = sub.add_parser("update", help="Change a project: renew its token, move it, pause it.")
        update.add_argument("name", metavar="NAME")
        _add_token_options(update, required=False)
        update.add_argument("--token-expires", type=iso_date, metavar="YYYY-MM-DD")
        update.add_argument("--token", help="A new project token.")
        update.add_argument("--residency", choices=Residency.values)
        update.add_argument("--base-url", metavar="URL", help="New API base URL override ('' removes it).")
        update.add_argument("--batch-size", type=positive_int)
        update.add_argument(
            "--deletion-approvals",
            type=int,
            choices=(1, 2),
            help="Staff approvals a deletion needs (2: two different people).",
        )
        update.add_argument("--api-secret-file", metavar="FILE")
        update.add_argument("--owner-email")
        active = update.add_mutually_exclusive_group()
        active.add_argument("--activate", dest="is_active", action="store_true", default=None)
        active.add_argument("--deactivate", dest="is_active", action="store_false")
        update.add_argument("--by", metavar="USERNAME", help="Record the change as made by this staff user.")
        update.add_argument("--json", action="store_true")
        identity_cli.add_query_access_options(update)  # profile lookups (gdpr_requests/identity)

        listing = sub.add_parser("list", help="Projects with token expiry and credential status (no secrets).")
        listing.add_argument("--json", action="store_true")

        check = sub.add_parser("check", help="One harmless authenticated call to Mixpanel: does the credential work?")
        check.add_argument("name", metavar="NAME")
        check.add_argument("--by", metavar="USERNAME", help="Record the check as done by this staff user.")
        check.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"do_{options['subcommand']}")(options)

    # --- subcommands ----------------------------------------------------------------------------------
    def do_add(self, options: dict[str, Any]) -> None:
        oauth_token = (
            read_secret_file(options["oauth_token_file"], "OAuth token")
            if options["oauth_token_file"]
            else options["oauth_token"]
        )
        api_secret = read_secret_file(options["api_secret_file"], "API secret") if options["api_secret_file"] else ""
        try:
            project = project_create(
                name=options["name"],
                mixpanel_project_id=options["project_id"],
                project_token=options["token"],
                oauth_token=oauth_token,
                token_expires_on=options["token_expires"],
                residency=options["residency"],
                base_url_override=options["base_url"],
                deletion_batch_size=options["batch_size"],
                api_secret=api_secret,
                token_owner_email=options["owner_email"],
                actor=actor_for(options["by"]),
            )
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self._report(project, options, "Added")

    def do_update(self, options: dict[str, Any]) -> None:
        project = get_project(options["name"])
        changes: dict[str, Any] = {}
        if options["oauth_token_file"]:
            changes["oauth_token"] = read_secret_file(options["oauth_token_file"], "OAuth token")
        elif options["oauth_token"] is not None:
            changes["oauth_token"] = options["oauth_token"]
        if options["api_secret_file"]:
            changes["api_secret"] = read_secret_file(options["api_secret_file"], "API secret")
        for option, field in (
            ("token_expires", "token_expires_on"),
            ("token", "project_token"),
            ("residency", "residency"),
            ("base_url", "base_url_override"),
            ("batch_size", "deletion_batch_size"),
            ("deletion_approvals", "deletion_approvals_required"),
            ("owner_email", "token_owner_email"),
            ("is_active", "is_active"),
        ):
            if options[option] is not None:
                changes[field] = options[option]
        query_access = identity_cli.query_access_changes(options)
        if not changes and not query_access:
            raise CommandError("Nothing to change: give at least one option (see --help).")
        if "oauth_token" in changes and "token_expires_on" not in changes:
            raise CommandError("A new OAuth token needs its expiry date: add --token-expires YYYY-MM-DD.")
        try:
            if changes:
                project = project_update(project=project, actor=actor_for(options["by"]), **changes)
            if query_access:
                project = project_set_query_access(project=project, actor=actor_for(options["by"]), **query_access)
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self._report(project, options, "Updated")
        if changes.get("deletion_approvals_required", 1) > 1:
            # The rule overrides the auto-approval of the project's cohort intakes: say so, not only on their page.
            for intake in auto_approval_blocked_intakes(project):
                self.stderr.write(f"Warning: cohort intake {intake.name}: {auto_approval_blocked(intake)}")
        if query_access and not options["json"]:
            self.stdout.write(identity_cli.query_access_summary(project))

    def do_list(self, options: dict[str, Any]) -> None:
        # Secrets stay encrypted (deferred): listing must work even when a key is missing mid-rotation.
        rows = (
            MixpanelProject.objects.defer("oauth_token", "api_secret")
            .annotate(has_secret=ExpressionWrapper(~Q(api_secret=""), output_field=BooleanField()))
            .order_by("name")
        )
        projects = [project_summary(p, has_api_secret=p.has_secret) for p in rows]
        if options["json"]:
            write_json(self.stdout, projects)
            return
        if not projects:
            self.stdout.write("No Mixpanel projects yet: add one with 'mixpanel_project add'.")
            return
        table: list[list[Any]] = []
        for p in projects:
            days = p["days_until_token_expiry"]
            expiry = f"{p['token_expires_on']} ({'EXPIRED' if days < 0 else f'{days} days'})"
            credential = p["credential_status"] + (f": {p['credential_error']}" if p["credential_error"] else "")
            table.append(
                [
                    p["name"],
                    p["mixpanel_project_id"],
                    p["residency"],
                    "yes" if p["is_active"] else "no",
                    p["deletion_batch_size"],
                    expiry,
                    credential,
                ]
            )
        write_table(
            self.stdout, ["NAME", "PROJECT ID", "RESIDENCY", "ACTIVE", "BATCH", "TOKEN EXPIRES", "CREDENTIAL"], table
        )

    def do_check(self, options: dict[str, Any]) -> None:
        project = get_project(options["name"])
        actor = actor_for(options["by"])
        try:
            from gdpr_requests.pipeline import project_check_credentials
        except ImportError:
            raise CommandError(
                "Credential checks need the Mixpanel pipeline (gdpr_requests.pipeline), "
                "which this installation does not have."
            ) from None
        try:
            result = project_check_credentials(project=project, actor=actor)
        except (ServiceError, DecryptionError) as exc:
            raise CommandError(str(exc)) from None
        # Identity lookups: one harmless profile query with the Query API credential, reported beside.
        query_ok, query_message = project_check_query(project=project, actor=actor)
        if options["json"]:
            write_json(
                self.stdout,
                {
                    "name": project.name,
                    "ok": result.ok,
                    "message": result.message,
                    "checked_at": timezone.now(),
                    "profile_query": {"ok": query_ok, "message": query_message},
                },
            )
        if not result.ok:
            raise CommandError(f"Credential check for {project.name!r} failed: {result.message}")
        if not options["json"]:
            self.stdout.write(f"OK: {project.name}: {result.message}")
            verdict = "OK" if query_ok else "NOTE" if query_ok is None else "FAILED"
            self.stdout.write(f"{verdict}: {project.name}: {query_message}")

    def _report(self, project: MixpanelProject, options: dict[str, Any], verb: str) -> None:
        if options["json"]:
            write_json(self.stdout, project_summary(project, has_api_secret=bool(project.api_secret)))
        else:
            self.stdout.write(
                f"{verb} project {project.name!r} (Mixpanel id {project.mixpanel_project_id}, {project.residency}); "
                f"token expires {project.token_expires_on}."
            )
