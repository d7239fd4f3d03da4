"""Running identity lookups: coalesce the waiting emails of a project into few profile queries, within the
Query API's budget, and store what they find (docs/identity.md §1.3-1.7).

``lookups_dispatch`` (the beat tick, every MIXPANEL_RESOLVE_INTERVAL_SECONDS) takes, per project, batches of
waiting lookups holding at most MIXPANEL_RESOLVE_BATCH distinct emails. For each it first takes a slot of the
shared query limiter, then claims the lookups with a conditional UPDATE (the slot's token becomes their claim),
and sends ``run_identity_lookup(project_id, token)`` after commit. With no slot free it stops for that project
until a later tick: nothing sleeps. ``lookup_batch_run`` (the worker) asks one query, ``where`` OR-joining each
email as typed and lower-cased for every email property of the project, pages as long as the limiter gives it
slots, and matches the profiles back to the requests by the property's value.

Faults: 429 → the lookups wait again and the project backs off (Retry-After, else exponential from the
budget's spacing, never past one window); 401/403 → the project's lookups pause (one staff alert), requests keep
waiting; 5xx/timeouts → back off and retry, up to MAX_ATTEMPTS; a malformed answer → those lookups fail with
"lookup failed: …", visible on the request. A worker that dies leaves its claim to run out (the dispatcher puts
the lookups back), and its slot to run out too.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, Entry, audit_record, audit_record_many
from gdpr_requests.identity import alerts, query_limiter
from gdpr_requests.identity.services import (
    candidate_accept,
    candidates_purge,
    lookups_catch_up,
    query_credentials,
)
from gdpr_requests.mixpanel import query_client
from gdpr_requests.models import (
    CandidateState,
    IdentityCandidate,
    IdentityLookup,
    LookupStatus,
    MixpanelProject,
    ProjectLookupState,
)
from gdpr_requests.requests import states
from gdpr_requests.requests.services import ServiceError

logger = logging.getLogger("gdpr_requests.identity")

RUN_IDENTITY_LOOKUP = "gdpr_requests.tasks.run_identity_lookup"
MAX_ATTEMPTS = 8
# A query's size, whatever the settings: at most this many addresses, and a ``where`` of at most this many bytes
# (Mixpanel documents no limit; 25 typical addresses x 2 variants x 2 properties are about 5 KB).
MAX_RESOLVE_BATCH = 100
MAX_WHERE_BYTES = 16_000
# Batches one dispatcher tick may start per project (the concurrency budget is the real bound).
MAX_BATCHES_PER_TICK = 20
EVIDENCE_PROPERTIES = ("$last_seen", "$name", "$first_name", "$last_name")
SYSTEM = Actor.system("identity lookup")
# Request statuses whose email is looked up (their distinct ids can still change).
_LOOKED_UP = (states.VERIFIED, states.ON_HOLD)


class _NoSlot(Exception):
    def __init__(self, wait: float) -> None:
        super().__init__("no query slot")
        self.wait = wait


@dataclass(frozen=True)
class BatchResult:
    outcome: str  # "done", "waiting", "paused", "failed", "gone"
    queries: int = 0
    lookups: int = 0
    candidates: int = 0


def resolve_batch_size() -> int:
    """MIXPANEL_RESOLVE_BATCH, kept within 1..MAX_RESOLVE_BATCH whatever the setting says."""
    return min(MAX_RESOLVE_BATCH, max(1, int(settings.MIXPANEL_RESOLVE_BATCH)))


def variants(email: str) -> list[str]:
    """The forms of an address to ask for: as typed and lower-cased (``==`` is exact, §1.3); none for no
    address (``== ""`` would match every profile without an email)."""
    email = email.strip()
    return list(dict.fromkeys([email, email.lower()])) if email else []


# --- dispatch ------------------------------------------------------------------------------------------


def lookups_dispatch() -> int:
    """Start every batch the budgets allow now; return how many were started. Safe to run concurrently."""
    now = timezone.now()
    # Claims that ran out (a worker died): back to waiting, their queries counted by the limiter already; a
    # lookup whose batch died MAX_ATTEMPTS times fails visibly instead of looping (and spending the budget).
    expired = IdentityLookup.objects.filter(status=LookupStatus.RUNNING, claimed_until__lt=now)
    with transaction.atomic():
        given_up = expired.filter(attempts__gte=MAX_ATTEMPTS).update(
            status=LookupStatus.FAILED,
            claim_token="",
            claimed_until=None,
            finished_at=now,
            error=f"lookup failed: its batch did not finish after {MAX_ATTEMPTS} attempts; look up again or enter ids",
        )
        if given_up:
            audit_record(action="identity.lookups_given_up", actor=SYSTEM, payload={"count": given_up})
    expired.update(status=LookupStatus.WAITING, claim_token="", claimed_until=None)
    candidates_purge()
    lookups_catch_up()
    auto_accept_catch_up(now)
    _skip_moved_on(now)
    project_ids = (
        IdentityLookup.objects.filter(status=LookupStatus.WAITING, not_before__lte=now)
        .filter(project__lookup_paused_at__isnull=True, project__is_active=True)
        .exclude(project__lookup_state__backoff_until__gt=now)
        .values_list("project_id", flat=True)
        .distinct()
    )
    started = 0
    for project_id in sorted(set(project_ids)):
        started += _dispatch_project(project_id)
    return started


def _skip_moved_on(now: Any) -> None:
    """Lookups of requests approved, closed or withdrawn before their turn: their ids can no longer change."""
    with transaction.atomic():
        moved = IdentityLookup.objects.filter(status=LookupStatus.WAITING).exclude(request__status__in=_LOOKED_UP)
        skipped = moved.update(
            status=LookupStatus.FAILED,
            finished_at=now,
            error="not looked up: the request left 'verified' before its lookup ran",
        )
        # Queued before email-less requests were kept out of lookups (lookups_open): nothing to ask Mixpanel.
        no_email = IdentityLookup.objects.filter(status=LookupStatus.WAITING, request__email_hash="").update(
            status=LookupStatus.FAILED, finished_at=now, error="not looked up: the request has no email address"
        )
        skipped += no_email
        if skipped:
            audit_record(action="identity.lookups_skipped", actor=SYSTEM, payload={"count": skipped})


def _dispatch_project(project_id: int) -> int:
    project = MixpanelProject.objects.get(pk=project_id)
    credentials = query_credentials(project)
    if credentials is None:
        return 0
    key = query_limiter.key_for(mixpanel_project_id=project.mixpanel_project_id, residency=project.residency)
    started = 0
    for _ in range(MAX_BATCHES_PER_TICK):
        lookup_ids = _next_batch(project)
        if not lookup_ids:
            break
        try:
            token, _wait = query_limiter.acquire(key, leave_room_to_page=True)
        except query_limiter.QueryLimiterUnavailable:
            break
        if token is None:
            break
        now = timezone.now()
        with transaction.atomic():
            claimed = IdentityLookup.objects.filter(pk__in=lookup_ids, status=LookupStatus.WAITING).update(
                status=LookupStatus.RUNNING,
                claim_token=token,
                claimed_until=now + timedelta(seconds=_lease_seconds()),
                attempts=F("attempts") + 1,
            )
            if claimed:
                transaction.on_commit(lambda token=token: _send(project_id, token))
        if not claimed:  # another dispatcher took them first: the slot was never used
            query_limiter.release(key, token, used=False)
            continue
        started += 1
    return started


def where_bytes(email: str, properties: list[str]) -> int:
    """What one address adds to a query's ``where`` (every variant of it for every property, with " or ")."""
    return sum(
        len(query_client.where_any(properties=[prop], values=[value]).encode()) + 4
        for prop in properties
        for value in variants(email)
    )


def _next_batch(project: MixpanelProject) -> list[int]:
    """The waiting lookups of the next MIXPANEL_RESOLVE_BATCH distinct emails, oldest first, as many as fit a
    ``where`` of MAX_WHERE_BYTES (long addresses and several email properties make fewer per query)."""
    project_id = project.pk
    properties = list(project.identity_properties or ["$email"])
    size = resolve_batch_size()
    budget = MAX_WHERE_BYTES
    now = timezone.now()
    waiting = IdentityLookup.objects.filter(
        project_id=project_id, status=LookupStatus.WAITING, not_before__lte=now
    ).exclude(request__email_hash="")  # a request without an email (a cohort member) has nothing to look up
    chosen: dict[str, str] = {}
    rows = waiting.order_by("queued_at", "id").values_list("request__requester_email", "request__email_hash")
    for email, hashed in rows[: size * 4]:
        if email.lower() in chosen:
            continue
        cost = where_bytes(email, properties)
        if chosen and cost > budget:
            break
        budget -= cost
        chosen[email.lower()] = hashed
        if len(chosen) == size:
            break
    if not chosen:
        return []
    # Every waiting request with one of these addresses (in any case) rides along: its clauses serve them all.
    return list(waiting.filter(request__email_hash__in=set(chosen.values())).values_list("id", flat=True))


def _lease_seconds() -> float:
    # A batch pages at most MAX_PAGES times, each within a connect and a read timeout.
    return query_client.MAX_PAGES * 2 * float(settings.MIXPANEL_HTTP_TIMEOUT_SECONDS) + 60.0


def _send(project_id: int, token: str) -> None:
    try:
        current_app.signature(RUN_IDENTITY_LOOKUP, args=(project_id, token)).apply_async()
    except Exception as exc:  # the broker is down: the claim runs out and the next tick takes them again
        logger.warning("could not enqueue an identity lookup batch (%s)", type(exc).__name__)


# --- one batch -----------------------------------------------------------------------------------------


def lookup_batch_run(*, project_id: int, token: str) -> BatchResult:
    """Ask the one profile query of the batch claimed under ``token`` and record its outcome."""
    project = MixpanelProject.objects.filter(pk=project_id).first()
    lookups = list(
        IdentityLookup.objects.filter(project_id=project_id, claim_token=token, status=LookupStatus.RUNNING)
        .select_related("request")
        .order_by("id")
    )
    credentials = query_credentials(project) if project is not None else None
    key = ""
    if credentials is not None:
        key = query_limiter.key_for(mixpanel_project_id=project.mixpanel_project_id, residency=project.residency)
    if not lookups or project is None or credentials is None:
        if key:
            query_limiter.release(key, token, used=False)
        if lookups:
            _fail(lookups, token, "lookup failed: the project has no Query API credentials")
        return BatchResult("gone")
    if project.lookup_paused_at is not None:
        # Paused since this batch was claimed (a batch beside it got a 401): ask nothing with a refused credential.
        query_limiter.release(key, token, used=False)
        _wait_again(lookups, token, delay=0, why="paused: Mixpanel refused the Query API credential")
        return BatchResult("paused", lookups=len(lookups))
    slot = token
    if not query_limiter.is_held(key, token):
        # The message waited longer than the slot's hold (a busy queue) or was redelivered: take a new slot.
        try:
            slot, wait = query_limiter.acquire(key, leave_room_to_page=True)
        except query_limiter.QueryLimiterUnavailable:
            slot, wait = None, 5.0
        if slot is None:
            _wait_again(lookups, token, delay=wait, why="waiting for the hour's query budget")
            return BatchResult("waiting", lookups=len(lookups))
    by_value: dict[str, list[IdentityLookup]] = {}
    for lookup in lookups:
        for value in variants(lookup.request.requester_email):
            by_value.setdefault(value, []).append(lookup)
    properties = list(project.identity_properties or ["$email"])
    where = query_client.where_any(properties=properties, values=list(by_value))
    tokens = [slot]  # one per page asked; the last one holds the query's slot

    def before_page(_page: int) -> None:
        # The previous page is answered: the next one takes its slot (pages run one at a time) and a window entry,
        # for which the dispatcher left room (acquire's leave_room_to_page).
        try:
            following, wait = query_limiter.next_page(key, tokens[-1])
        except query_limiter.QueryLimiterUnavailable:
            raise _NoSlot(5.0) from None
        if following is None:
            raise _NoSlot(wait)
        tokens.append(following)

    try:
        profiles, pages = query_client.query_profiles(
            credentials=credentials,
            where=where,
            output_properties=[*properties, *EVIDENCE_PROPERTIES],
            timeout=float(settings.MIXPANEL_HTTP_TIMEOUT_SECONDS),
            before_page=before_page,
        )
    except _NoSlot as exc:
        # The first pages were asked for nothing: the batch starts again when the budget allows.
        _wait_again(lookups, token, delay=exc.wait, why="the hour's query budget ran out while paging")
        return BatchResult("waiting", queries=len(tokens), lookups=len(lookups))
    except query_client.QueryError as exc:
        return _on_error(project, lookups, token, exc, queries=len(tokens))
    finally:
        query_limiter.release(key, tokens[-1])  # the pages before it were released by next_page
    found = _record(project, lookups, token, profiles, by_value, properties, pages=pages)
    return BatchResult("done", queries=pages, lookups=len(lookups), candidates=found)


def _mine(lookups: list[IdentityLookup], token: str):
    return IdentityLookup.objects.filter(
        pk__in=[lk.pk for lk in lookups], claim_token=token, status=LookupStatus.RUNNING
    )


def _record(
    project: MixpanelProject,
    lookups: list[IdentityLookup],
    token: str,
    profiles: list[query_client.Profile],
    by_value: dict[str, list[IdentityLookup]],
    properties: list[str],
    *,
    pages: int,
) -> int:
    now = timezone.now()
    found: dict[int, dict[str, IdentityCandidate]] = {lk.pk: {} for lk in lookups}
    for profile in profiles:
        for prop in properties:
            value = profile.properties.get(prop)
            if not isinstance(value, str):
                continue
            for lookup in by_value.get(value, []):
                if (
                    profile.distinct_id in found[lookup.pk]
                    or len(profile.distinct_id) > 255
                    or not _storable(profile.distinct_id)  # an id we cannot store exactly is no id to send back
                ):
                    continue
                found[lookup.pk][profile.distinct_id] = IdentityCandidate(
                    request_id=lookup.request_id,
                    project_id=project.pk,
                    distinct_id=profile.distinct_id,
                    matched_property=prop[:255],
                    last_seen=_text(profile.properties.get("$last_seen"))[:40],
                    profile_name=_profile_name(profile.properties),
                    found_at=now,
                )
    with transaction.atomic():
        mine = list(_mine(lookups, token).select_for_update().values_list("pk", flat=True))
        if not mine:  # the claim ran out and another batch took them: its answer will count
            return 0
        kept = [lk for lk in lookups if lk.pk in set(mine)]
        IdentityCandidate.objects.bulk_create([c for lk in kept for c in found[lk.pk].values()], ignore_conflicts=True)
        for lookup in kept:
            IdentityLookup.objects.filter(pk=lookup.pk).update(
                status=LookupStatus.DONE,
                claim_token="",
                claimed_until=None,
                finished_at=now,
                candidate_count=len(found[lookup.pk]),
                error="",
            )
        ProjectLookupState.objects.filter(project=project).update(failures=0, backoff_until=None)
        audit_record_many(
            [
                Entry(
                    action="identity.query_made",
                    actor=SYSTEM,
                    payload={
                        "project": project.name,
                        "lookups": len(kept),
                        "emails": len({lk.request.requester_email.lower() for lk in kept}),
                        "pages": pages,
                        "profiles": len(profiles),
                    },
                ),
                *(
                    Entry(
                        action="identity.lookup_finished",
                        actor=SYSTEM,
                        request_reference=lk.request.reference,
                        payload={"project": project.name, "candidate_count": len(found[lk.pk])},
                    )
                    for lk in kept
                ),
            ]
        )
    total = sum(len(found[lk.pk]) for lk in kept)
    if project.auto_accept_single_match:
        for lookup in kept:
            if len(found[lookup.pk]) == 1:
                _auto_accept(lookup, next(iter(found[lookup.pk])))
    return total


# A batch auto-accepts its lone matches right after recording them; the sweep gives it this long first.
AUTO_ACCEPT_GRACE = timedelta(seconds=30)
AUTO_ACCEPT_CATCH_UP_LIMIT = 200


def auto_accept_catch_up(now: Any) -> int:
    """Accept the lone matches whose batch died between recording them and accepting them (the accept is its
    own transaction, after the lookup is done): lookups done with one candidate, still pending, in a project
    that auto-accepts, of a request whose ids may still change. Returns how many were accepted."""
    lookups = list(
        IdentityLookup.objects.filter(
            status=LookupStatus.DONE,
            candidate_count=1,
            finished_at__lt=now - AUTO_ACCEPT_GRACE,
            project__auto_accept_single_match=True,
            request__status__in=(states.VERIFIED, states.ON_HOLD),
        )
        .filter(
            Exists(
                IdentityCandidate.objects.filter(
                    request_id=OuterRef("request_id"), project_id=OuterRef("project_id"), state=CandidateState.PENDING
                )
            )
        )
        .select_related("request", "project")
        .order_by("finished_at", "pk")[:AUTO_ACCEPT_CATCH_UP_LIMIT]
    )
    pending: dict[tuple[int, int], list[str]] = {}
    rows = IdentityCandidate.objects.filter(
        request_id__in={lk.request_id for lk in lookups},
        project_id__in={lk.project_id for lk in lookups},
        state=CandidateState.PENDING,
    ).values_list("request_id", "project_id", "distinct_id")
    for request_id, project_id, distinct_id in rows:  # one query for the whole sweep, not one per lookup
        pending.setdefault((request_id, project_id), []).append(distinct_id)
    accepted = 0
    for lookup in lookups:
        ids = pending.get((lookup.request_id, lookup.project_id), [])
        if len(ids) == 1 and _auto_accept(lookup, ids[0]):
            accepted += 1
    return accepted


def _auto_accept(lookup: IdentityLookup, distinct_id: str) -> bool:
    """The project's policy: a lone match is accepted without review (when the request's ids may change).
    Returns whether it was."""
    if lookup.request.status not in (states.VERIFIED, states.ON_HOLD):
        return False
    try:
        candidate_accept(request=lookup.request, distinct_ids=[distinct_id], actor=Actor.system("auto-accept"))
    except ServiceError as exc:  # the request moved on meanwhile: staff decide
        logger.info("auto-accept skipped for %s (%s)", lookup.request.reference, type(exc).__name__)
        return False
    return True


def _storable(value: str) -> bool:
    """Text PostgreSQL can store: encodable as UTF-8 (no lone surrogates) and without NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _text(value: Any) -> str:
    """A display value from a profile, made storable (bad characters replaced)."""
    text = str(value or "")
    return text if _storable(text) else text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def _profile_name(properties: dict[str, Any]) -> str:
    name = properties.get("$name")
    if not isinstance(name, str) or not name.strip():
        parts = [properties.get("$first_name"), properties.get("$last_name")]
        name = " ".join(p for p in parts if isinstance(p, str) and p.strip())
    return _text(name).strip()[:200]


def _backoff(project: MixpanelProject, retry_after: float | None) -> float:
    """Seconds the project waits: Retry-After when given, else doubling from the budget's own spacing
    (window / limit) with jitter, never longer than one window (the budget is whole again by then)."""
    window = query_limiter.window_seconds()
    with transaction.atomic():
        state, _ = ProjectLookupState.objects.select_for_update().get_or_create(project=project)
        failures = min(state.failures + 1, 30)
        base = window / query_limiter.limit()
        delay = retry_after if retry_after is not None else base * (2 ** (failures - 1)) * random.uniform(0.8, 1.2)
        delay = max(0.001, min(delay, window))
        state.failures = failures
        state.backoff_until = timezone.now() + timedelta(seconds=delay)
        state.save(update_fields=["failures", "backoff_until"])
    return delay


def _wait_again(lookups: list[IdentityLookup], token: str, *, delay: float, why: str) -> None:
    _mine(lookups, token).update(
        status=LookupStatus.WAITING,
        claim_token="",
        claimed_until=None,
        not_before=timezone.now() + timedelta(seconds=delay),
        error=why[:300],
    )


def _fail(lookups: list[IdentityLookup], token: str, why: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        mine = list(_mine(lookups, token).values_list("pk", flat=True))
        _mine(lookups, token).update(
            status=LookupStatus.FAILED, claim_token="", claimed_until=None, finished_at=now, error=why[:300]
        )
        audit_record_many(
            [
                Entry(
                    action="identity.lookup_failed",
                    actor=SYSTEM,
                    request_reference=lk.request.reference,
                    payload={"project_pk": lk.project_id, "why": why[:200]},
                )
                for lk in lookups
                if lk.pk in set(mine)
            ]
        )


def _on_error(
    project: MixpanelProject, lookups: list[IdentityLookup], token: str, exc: query_client.QueryError, *, queries: int
) -> BatchResult:
    count = len(lookups)
    if exc.kind == query_client.CREDENTIAL:
        _pause(project, exc)
        _wait_again(lookups, token, delay=0, why="paused: Mixpanel refused the Query API credential")
        return BatchResult("paused", queries=queries, lookups=count)
    if exc.kind in (query_client.RATE_LIMITED, query_client.TRANSIENT):
        delay = _backoff(project, exc.retry_after)
        exhausted = [lk for lk in lookups if lk.attempts >= MAX_ATTEMPTS]
        if exhausted:
            _fail(exhausted, token, f"lookup failed: Mixpanel kept failing ({exc}) after {MAX_ATTEMPTS} attempts")
        _wait_again(lookups, token, delay=delay, why=str(exc))
        logger.warning("identity lookup: %s; project %s backs off %.0f s", exc, project.pk, delay)
        return BatchResult("waiting", queries=queries, lookups=count)
    _fail(lookups, token, f"lookup failed: {exc}")
    logger.warning("identity lookup failed in project %s: %s", project.pk, exc)
    return BatchResult("failed", queries=queries, lookups=count)


def _pause(project: MixpanelProject, exc: query_client.QueryError) -> None:
    """Pause the project's lookups (once: a conditional UPDATE) and alert staff once per pause."""
    now = timezone.now()
    reason = f"Mixpanel refused the Query API credential (HTTP {exc.http_status}); renew it to resume"
    with transaction.atomic():
        paused = MixpanelProject.objects.filter(pk=project.pk, lookup_paused_at__isnull=True).update(
            lookup_paused_at=now, lookup_paused_reason=reason[:300]
        )
        if paused:
            audit_record(
                action="identity.lookups_paused",
                actor=SYSTEM,
                payload={"project": project.name, "project_pk": project.pk, "http_status": exc.http_status},
            )
            transaction.on_commit(lambda: alerts.alert_lookups_paused(project_id=project.pk, paused_at=now))
