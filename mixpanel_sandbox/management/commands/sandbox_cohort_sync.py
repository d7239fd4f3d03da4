"""``sandbox_cohort_sync --intake NAME --members N``: post a cohort sync to the local app exactly as Mixpanel would.

The password is shown only when the intake is made (``cohort_intake add``): pass it with ``--password-file``
(``-`` reads standard input) or ``--password``. Members are numbered, so the same ``--members`` and ``--start``
send the same people again (a repeat creates nothing new).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gdpr_requests.cohorts.services import webhook_url
from gdpr_requests.management.cli import positive_int, read_secret_file, write_json
from gdpr_requests.models import CohortAction, CohortIntake
from mixpanel_sandbox.cohort_sync import PAGE_SIZE, build_pages, post_pages, sandbox_members


class Command(BaseCommand):
    help = "Post a Mixpanel cohort sync (pages of up to 1000 members, one session, Basic auth) to an intake."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--intake", required=True, metavar="NAME")
        parser.add_argument("--members", required=True, type=int, metavar="N", help="How many members (0 or more).")
        parser.add_argument("--start", type=positive_int, default=1, help="Number of the first member.")
        parser.add_argument("--action", default=CohortAction.ADD_MEMBERS, choices=CohortAction.values)
        parser.add_argument("--url", help="Where to post (default: the intake's webhook URL under SITE_URL).")
        parser.add_argument("--session-id", help="Reuse a session id (default: a new one, as for a new export).")
        parser.add_argument("--page-size", type=positive_int, default=PAGE_SIZE)
        secret = parser.add_mutually_exclusive_group(required=True)
        secret.add_argument("--password-file", metavar="FILE", help="File holding the password ('-': stdin).")
        secret.add_argument("--password", help="The intake's password (visible in shell history).")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["members"] < 0:
            raise CommandError("--members must be 0 or more.")
        intake = CohortIntake.objects.select_related("project").filter(name__iexact=options["intake"].strip()).first()
        if intake is None:
            raise CommandError(f"No cohort intake named {options['intake'].strip()!r}.")
        password = options["password"] or read_secret_file(options["password_file"], "password")
        pages = build_pages(
            members=sandbox_members(options["members"], start=options["start"]),
            project_id=intake.project.mixpanel_project_id,
            action=options["action"],
            session_id=options["session_id"],
            page_size=options["page_size"],
        )
        url = options["url"] or webhook_url(intake)
        results = []
        try:
            for result in post_pages(url=url, username=intake.username, password=password, pages=pages):
                results.append(result)
                if not options["json"]:
                    self.stdout.write(
                        f"page {result.page}/{len(pages)}: HTTP {result.status} in {result.seconds:.2f} s: {result.body}"
                    )
        except OSError as exc:  # requests' ConnectionError and Timeout are OSErrors
            raise CommandError(f"Could not post to {url}: {type(exc).__name__}. Is the app running?") from None
        if options["json"]:
            write_json(
                self.stdout,
                {
                    "session_id": pages[0]["parameters"]["mixpanel_session_id"],
                    "pages": [
                        {"page": r.page, "status": r.status, "body": r.body, "seconds": round(r.seconds, 3)}
                        for r in results
                    ],
                },
            )
        if any(r.status != 200 for r in results):
            raise CommandError("The app refused a page (see above); Mixpanel would pause this sync.")
