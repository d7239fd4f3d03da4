"""Re-encrypt every stored secret under the first key of FIELD_ENCRYPTION_KEYS.

Rotation: put a new key first, keep the old ones after it, run this, then remove the old keys.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from gdpr_requests import crypto
from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import MixpanelProject

ENCRYPTED_FIELDS = ("oauth_token", "api_secret")


class Command(BaseCommand):
    help = "Re-encrypt stored secrets under the first key in FIELD_ENCRYPTION_KEYS."

    def handle(self, *args: Any, **options: Any) -> None:
        table = MixpanelProject._meta.db_table
        columns = ", ".join(ENCRYPTED_FIELDS)
        lock = " FOR UPDATE" if connection.vendor == "postgresql" else ""
        rotated = 0
        with transaction.atomic(), connection.cursor() as cursor:
            # Raw ciphertext: the model field would hand us clear text.
            cursor.execute(f"SELECT id, {columns} FROM {table}{lock}")  # noqa: S608
            for pk, *values in cursor.fetchall():
                try:
                    new_values = [crypto.rotate(value) if value else value for value in values]
                except crypto.DecryptionError as exc:
                    raise CommandError(f"Project #{pk}: {exc}") from None
                assignments = ", ".join(f"{name} = %s" for name in ENCRYPTED_FIELDS)
                cursor.execute(f"UPDATE {table} SET {assignments} WHERE id = %s", [*new_values, pk])  # noqa: S608
                rotated += 1
            audit_record(
                action="secrets.rotated", actor=Actor.system("rotate_encryption_keys"), payload={"projects": rotated}
            )
        self.stdout.write(f"Re-encrypted the secrets of {rotated} project(s) under the first key.")
