"""The operational beat task: beat's heartbeat for deep readiness (ops/heartbeat.py)."""

from __future__ import annotations

from celery import shared_task

from gdpr_requests.ops import heartbeat
from gdpr_requests.tasking import options


@shared_task(**options("beat_heartbeat"))
def beat_heartbeat() -> None:
    heartbeat.beat_heartbeat_record()
