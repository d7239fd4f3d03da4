"""The append-only, hash-chained audit trail (the database refuses UPDATE and DELETE: audit/triggers.py)."""

from __future__ import annotations

from django.db import models


class ActorType(models.TextChoices):
    STAFF = "staff", "Staff"
    SUBJECT = "subject", "Data subject"
    SYSTEM = "system", "System"
    AUDITOR = "auditor", "Auditor"


class AuditEvent(models.Model):
    """Append-only and hash-chained; the database refuses UPDATE and DELETE (see migrations)."""

    sequence = models.PositiveBigIntegerField(unique=True)
    occurred_at = models.DateTimeField()
    actor_type = models.CharField(max_length=8, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_label = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    request_reference = models.CharField(max_length=16, blank=True, db_index=True)
    payload = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["sequence"]
        indexes = [models.Index(fields=["occurred_at"])]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action}"


class AuditChainHead(models.Model):
    """The chain's head (last sequence and its hash), written with every append in the same transaction.

    One row outside the events table, which the database lets move forward only (audit/triggers.py): deleting
    the newest events, even with the events' triggers lifted, leaves this checkpoint past the table's end, and
    verification reports the events missing at the end.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    sequence = models.PositiveBigIntegerField()
    hash = models.CharField(max_length=64)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="audit_chain_head_single_row")]

    def __str__(self) -> str:
        return f"head #{self.sequence}"
