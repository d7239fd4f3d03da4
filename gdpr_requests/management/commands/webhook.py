"""``webhook add|list|disable|rotate-secret``: endpoints for webhooks out. The signing secret is printed once,
by ``add`` and ``rotate-secret``; ``list`` never shows it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gdpr_requests.management.cli import actor_for, positive_int, write_json, write_table
from gdpr_requests.models import WebhookEndpoint
from gdpr_requests.models.webhooks import WEBHOOK_EVENTS
from gdpr_requests.requests.services import ServiceError
from gdpr_requests.webhooks.services import endpoint_create, endpoint_disable, endpoint_rotate_secret


def endpoint_summary(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.pk,
        "url": endpoint.url,
        "events": endpoint.events,
        "is_active": endpoint.is_active,
        "created_at": endpoint.created_at,
        "secret_rotated_at": endpoint.secret_rotated_at,
    }


class Command(BaseCommand):
    help = "Add, list, disable webhook endpoints and rotate their signing secrets."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{add,list,disable,rotate-secret}")
        add = sub.add_parser("add", help="Add an endpoint and print its signing secret once.")
        add.add_argument("--url", required=True)
        add.add_argument("--event", action="append", required=True, choices=WEBHOOK_EVENTS, dest="events")
        add.add_argument("--by", metavar="USERNAME", help="Record the change as made by this staff user.")
        add.add_argument("--json", action="store_true")
        listing = sub.add_parser("list", help="Endpoints and their events (never the secret).")
        listing.add_argument("--json", action="store_true")
        for name, text in (("disable", "Stop sending to an endpoint."), ("rotate-secret", "A new signing secret.")):
            command = sub.add_parser(name, help=text)
            command.add_argument("id", type=positive_int, metavar="ID")
            command.add_argument("--by", metavar="USERNAME", help="Record the change as made by this staff user.")
            command.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, "do_" + options["subcommand"].replace("-", "_"))(options)

    def _endpoint(self, pk: int) -> WebhookEndpoint:
        endpoint = WebhookEndpoint.objects.filter(pk=pk).first()
        if endpoint is None:
            raise CommandError(f"No webhook endpoint with id {pk}.")
        return endpoint

    def _print_secret(self, endpoint: WebhookEndpoint, options: dict[str, Any]) -> None:
        if options["json"]:
            write_json(self.stdout, {**endpoint_summary(endpoint), "secret": endpoint.secret})
            return
        self.stdout.write(f"Webhook {endpoint.pk} -> {endpoint.url} ({', '.join(endpoint.events)}); signing secret:")
        self.stdout.write(endpoint.secret)
        self.stdout.write("This is the only time the secret is shown: store it now.")

    def do_add(self, options: dict[str, Any]) -> None:
        try:
            endpoint = endpoint_create(url=options["url"], events=options["events"], actor=actor_for(options["by"]))
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self._print_secret(endpoint, options)

    def do_list(self, options: dict[str, Any]) -> None:
        endpoints = [endpoint_summary(e) for e in WebhookEndpoint.objects.order_by("pk")]
        if options["json"]:
            write_json(self.stdout, endpoints)
            return
        write_table(
            self.stdout,
            ["ID", "URL", "EVENTS", "ACTIVE"],
            [[e["id"], e["url"], ",".join(e["events"]), "yes" if e["is_active"] else "no"] for e in endpoints],
        )

    def do_disable(self, options: dict[str, Any]) -> None:
        try:
            endpoint = endpoint_disable(endpoint=self._endpoint(options["id"]), actor=actor_for(options["by"]))
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            write_json(self.stdout, endpoint_summary(endpoint))
        else:
            self.stdout.write(f"Webhook {endpoint.pk} is disabled.")

    def do_rotate_secret(self, options: dict[str, Any]) -> None:
        endpoint = endpoint_rotate_secret(endpoint=self._endpoint(options["id"]), actor=actor_for(options["by"]))
        self._print_secret(endpoint, options)
