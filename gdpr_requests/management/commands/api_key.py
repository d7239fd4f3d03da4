"""``api_key create|list|revoke``: keys for the REST API. ``create`` prints the key once; nothing prints it again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gdpr_requests.api.keys import api_key_create, api_key_revoke
from gdpr_requests.management.cli import actor_for, positive_int, write_json, write_table
from gdpr_requests.models import ApiKey, ApiScope
from gdpr_requests.requests.services import ServiceError


def key_summary(api_key: ApiKey) -> dict[str, Any]:
    return {
        "id": api_key.pk,
        "name": api_key.name,
        "prefix": api_key.prefix,
        "scopes": api_key.scopes,
        "created_at": api_key.created_at,
        "last_used_at": api_key.last_used_at,
        "revoked_at": api_key.revoked_at,
    }


class Command(BaseCommand):
    help = "Make, list and revoke API keys for the REST API."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{create,list,revoke}")
        create = sub.add_parser("create", help="Make a key and print it once.")
        create.add_argument("--name", required=True, help="Who uses the key (unique), e.g. 'support-desk'.")
        create.add_argument(
            "--scope", action="append", required=True, choices=ApiScope.values, dest="scopes", help="Repeatable."
        )
        create.add_argument("--by", metavar="USERNAME", help="Record the change as made by this staff user.")
        create.add_argument("--json", action="store_true")
        listing = sub.add_parser("list", help="Keys with their scopes and last use (never the key).")
        listing.add_argument("--json", action="store_true")
        revoke = sub.add_parser("revoke", help="Revoke a key for good.")
        revoke.add_argument("id", type=positive_int, metavar="ID")
        revoke.add_argument("--by", metavar="USERNAME", help="Record the change as made by this staff user.")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"do_{options['subcommand']}")(options)

    def do_create(self, options: dict[str, Any]) -> None:
        try:
            made = api_key_create(
                name=options["name"], scopes=options["scopes"], actor=actor_for(options["by"], component="cli")
            )
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        data = {"id": made.api_key.pk, "name": made.api_key.name, "scopes": made.api_key.scopes, "key": made.key}
        if options["json"]:
            write_json(self.stdout, data)
            return
        self.stdout.write(f"API key {data['id']} ({data['name']}), scopes {', '.join(data['scopes'])}:")
        self.stdout.write(made.key)
        self.stdout.write("This is the only time the key is shown: store it now.")

    def do_list(self, options: dict[str, Any]) -> None:
        keys = [key_summary(api_key) for api_key in ApiKey.objects.order_by("pk")]
        if options["json"]:
            write_json(self.stdout, keys)
            return
        write_table(
            self.stdout,
            ["ID", "NAME", "PREFIX", "SCOPES", "LAST USED", "REVOKED"],
            [
                [k["id"], k["name"], k["prefix"], ",".join(k["scopes"]), k["last_used_at"] or "never", k["revoked_at"]]
                for k in keys
            ],
        )

    def do_revoke(self, options: dict[str, Any]) -> None:
        api_key = ApiKey.objects.filter(pk=options["id"]).first()
        if api_key is None:
            raise CommandError(f"No API key with id {options['id']}.")
        try:
            api_key_revoke(api_key=api_key, actor=actor_for(options["by"], component="cli"))
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"API key {api_key.pk} ({api_key.name}) is revoked.")
