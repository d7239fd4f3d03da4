"""Identity lookups' Celery tasks: ids and tokens only (never an email), each calling one service."""

from __future__ import annotations

from celery import shared_task

from gdpr_requests.identity import resolution
from gdpr_requests.tasking import options


@shared_task(**options("resolve_identities"))
def resolve_identities() -> None:
    """Beat: coalesce waiting lookups into profile queries, as far as each project's budget allows now."""
    resolution.lookups_dispatch()


@shared_task(**options("run_identity_lookup"))
def run_identity_lookup(project_id: int, token: str) -> None:
    """One profile query for the batch claimed under ``token`` (the limiter slot it holds)."""
    resolution.lookup_batch_run(project_id=int(project_id), token=str(token))
