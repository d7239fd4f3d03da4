"""Django's flush, which also empties the append-only audit table (tests and deliberate resets only).

The triggers refuse DELETE and TRUNCATE on audit events, so a plain flush would fail; this lifts them for the
flush alone and puts them back in the same transaction.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands.flush import Command as FlushCommand
from django.db import connections, transaction

from gdpr_requests.audit import triggers as audit_triggers


class Command(FlushCommand):
    def handle(self, **options: Any) -> None:
        connection = connections[options["database"]]
        with transaction.atomic(using=options["database"]):
            audit_triggers.drop(connection)
            try:
                super().handle(**options)
            finally:
                audit_triggers.install(connection)
