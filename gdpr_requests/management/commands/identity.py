"""``identity resolve|candidates|accept-ids|reject-ids REF``: find a request's subject in Mixpanel by email.

The same subcommands as ``dsr resolve`` and friends (gdpr_requests/management/identity_cli.py). Every write goes through
the identity services, audited like the admin's; ``--by USERNAME`` records the staff user acting.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gdpr_requests.management import identity_cli as cli
from gdpr_requests.requests.services import ServiceError


class Command(BaseCommand):
    help = "Identity lookups in Mixpanel: resolve, candidates, accept-ids, reject-ids."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

        def add(name: str, help_text: str, *, by: bool = True) -> CommandParser:
            p = sub.add_parser(name, help=help_text, description=help_text)
            p.add_argument("reference", metavar="REF", help="The request reference, e.g. DSR-7K4Q-9XWM.")
            if by:
                p.add_argument("--by", metavar="USERNAME", help="The staff user acting (default: the system, 'cli').")
            p.add_argument("--json", action="store_true", help="Print JSON.")
            return p

        cli.add_subcommands(add)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            cli.run(self, options)
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
