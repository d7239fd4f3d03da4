"""Identity lookups: which requests wait for one, a project's Query API access, and staff's decisions.

- ``lookups_open`` queues a lookup per (request, project) when a request becomes verified (hooks.py) and the
  project can be queried; ``request_resolve_now`` queues one again on staff's word (``dsr resolve``);
- ``project_set_query_access`` stores a project's service account, email properties and policy, and lifts a
  pause that a refused credential caused;
- ``candidate_accept`` / ``candidate_reject``: staff's review; accepted ids join the request's distinct ids
  through requests.services.request_set_distinct_ids;
- ``approval_blocker`` tells approval why it must wait (a lookup still running, or one that found nobody);
- ``candidates_purge`` forgets the candidates of requests whose personal data was purged.

Every write audits counts and references, never an email, a distinct id or a profile's name. Running the
lookups (coalescing, the rate limit, faults) is resolution.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, Entry, audit_record, audit_record_many
from gdpr_requests.mixpanel.query_client import QueryCredentials, engage_url
from gdpr_requests.models import (
    CandidateState,
    DataSubjectRequest,
    IdentityCandidate,
    IdentityLookup,
    LookupStatus,
    MixpanelProject,
)
from gdpr_requests.requests import states
from gdpr_requests.requests.services import ServiceError, request_set_distinct_ids

MAX_IDENTITY_PROPERTIES = 5
MAX_PROPERTY_LENGTH = 100
# Email properties per project: each multiplies a profile query's clauses (emails x 2 case variants).
OPEN_LOOKUP = (LookupStatus.WAITING, LookupStatus.RUNNING)
# Statuses in which ids can still change (requests.services.request_set_distinct_ids's rule).
_EDITABLE = (states.UNVERIFIED, states.VERIFIED, states.ON_HOLD)


# --- credentials ---------------------------------------------------------------------------------------


def queryable_projects() -> QuerySet[MixpanelProject]:
    """Active projects with Query API credentials: a service account, or the API secret as a fallback."""
    service_account = Q(query_username__gt="") & ~Q(query_secret="")
    return MixpanelProject.objects.filter(is_active=True).filter(service_account | ~Q(api_secret=""))


def query_credentials(project: MixpanelProject) -> QueryCredentials | None:
    """The project's Query API credentials (service account first, API secret as the fallback), or None."""
    url = engage_url(project.residency, project.base_url_override)
    if project.query_username and project.query_secret:
        return QueryCredentials(
            url=url,
            project_id=project.mixpanel_project_id,
            username=project.query_username,
            secret=project.query_secret,
        )
    if project.api_secret:
        return QueryCredentials(url=url, project_id=project.mixpanel_project_id, username="", secret=project.api_secret)
    return None


def credential_warning(project: MixpanelProject) -> str:
    """What staff should know about how the project is queried ("" when all is well)."""
    if project.query_username and project.query_secret:
        return ""
    if project.api_secret:
        return (
            "Profile lookups use the project API secret, which Mixpanel retires on 3 March 2027: "
            "add a service account (mixpanel_project update NAME --service-account-username ...)."
        )
    return "No Query API credentials: emails are not looked up in this project."


def _clean_properties(values: Iterable[str]) -> list[str]:
    cleaned = list(dict.fromkeys(str(v).strip() for v in values if str(v).strip()))
    if not cleaned:
        raise ServiceError("Give at least one profile property that holds an email (e.g. $email).")
    if len(cleaned) > MAX_IDENTITY_PROPERTIES:
        raise ServiceError(f"At most {MAX_IDENTITY_PROPERTIES} email properties per project.")
    for name in cleaned:
        if len(name) > MAX_PROPERTY_LENGTH or any(ch in name for ch in '"\\\n\r'):
            raise ServiceError(f"{name[:40]!r} is not a property name (no quotes, backslashes or line breaks).")
    return cleaned


def project_set_query_access(
    *,
    project: MixpanelProject,
    actor: Actor,
    username: str | None = None,
    secret: str | None = None,
    identity_properties: Sequence[str] | None = None,
    auto_accept_single_match: bool | None = None,
) -> MixpanelProject:
    """Change a project's Query API access; None leaves a field as it is. A new credential lifts a pause.

    The audit event names the changed fields and the new non-secret values, never the username or secret.
    """
    values: dict[str, Any] = {}
    if username is not None:
        username = username.strip()
        if len(username) > 255 or any(ch.isspace() for ch in username):
            raise ServiceError("The service account username must be one word of at most 255 characters.")
        values["query_username"] = username
        if not username and secret is None:  # no username: the service account is removed, secret and all
            values["query_secret"] = ""
    if secret is not None:
        secret = secret.strip()
        if any(ch.isspace() for ch in secret):
            raise ServiceError("The service account secret contains whitespace; paste the secret alone.")
        values["query_secret"] = secret
    if identity_properties is not None:
        values["identity_properties"] = _clean_properties(identity_properties)
    if auto_accept_single_match is not None:
        values["auto_accept_single_match"] = bool(auto_accept_single_match)
    with transaction.atomic():
        locked = MixpanelProject.objects.select_for_update().get(pk=project.pk)
        merged_username = values.get("query_username", locked.query_username)
        merged_secret = values.get("query_secret", locked.query_secret)
        if bool(merged_username) != bool(merged_secret):
            raise ServiceError("A service account needs both its username and its secret.")
        changed = [name for name, value in values.items() if getattr(locked, name) != value]
        if not changed:
            return locked
        for name in changed:
            setattr(locked, name, values[name])
        fields = list(changed)
        if {"query_username", "query_secret"} & set(changed) and locked.lookup_paused_at:
            locked.lookup_paused_at = None
            locked.lookup_paused_reason = ""
            fields += ["lookup_paused_at", "lookup_paused_reason"]
        locked.save(update_fields=[*fields, "updated_at"])
        audit_record(
            action="project.query_access_changed",
            actor=actor,
            payload={
                "project": locked.name,
                "project_pk": locked.pk,
                "fields": sorted(changed),
                "identity_property_count": len(locked.identity_properties or []),
                "auto_accept_single_match": locked.auto_accept_single_match,
                "lookups_resumed": "lookup_paused_at" in fields,
            },
        )
    return locked


CHECK_ADDRESS = "credential-check@invalid.invalid"


def project_check_query(*, project: MixpanelProject, actor: Actor) -> tuple[bool | None, str]:
    """One harmless profile query (an address that cannot exist) to test the Query API credential.

    Returns (True, ...) when Mixpanel answered (a paused project resumes), (False, ...) when it refused the
    credential (lookups pause), (None, ...) when it says nothing about the credential (no credentials, the
    hour's budget in use, Mixpanel busy). The query takes a slot of the shared limiter like any other.
    """
    from gdpr_requests.identity import query_limiter
    from gdpr_requests.mixpanel import query_client

    credentials = query_credentials(project)
    if credentials is None:
        return None, "no Query API credentials: profile lookups are off for this project"
    key = query_limiter.key_for(mixpanel_project_id=project.mixpanel_project_id, residency=project.residency)
    try:
        slot, _wait = query_limiter.acquire(key)
    except query_limiter.QueryLimiterUnavailable:
        return None, "the query rate limiter (Redis) is not answering; try again shortly"
    if slot is None:
        return None, "the project's profile query budget is in use right now; try again later"
    failure: query_client.QueryError | None = None
    try:
        query_client.query_page(
            credentials=credentials,
            where=query_client.where_any(properties=["$email"], values=[CHECK_ADDRESS]),
            output_properties=["$email"],
            timeout=float(settings.MIXPANEL_HTTP_TIMEOUT_SECONDS),
        )
    except query_client.QueryError as exc:
        failure = exc
    finally:
        query_limiter.release(key, slot)
    ok = None if failure is not None and failure.kind != query_client.CREDENTIAL else failure is None
    with transaction.atomic():
        resumed = False
        if ok:
            resumed = bool(
                MixpanelProject.objects.filter(pk=project.pk, lookup_paused_at__isnull=False).update(
                    lookup_paused_at=None, lookup_paused_reason=""
                )
            )
        elif ok is False:
            MixpanelProject.objects.filter(pk=project.pk, lookup_paused_at__isnull=True).update(
                lookup_paused_at=timezone.now(),
                lookup_paused_reason=f"Mixpanel refused the Query API credential (HTTP {failure.http_status})",
            )
        audit_record(
            action="identity.query_checked",
            actor=actor,
            payload={
                "project": project.name,
                "project_pk": project.pk,
                "ok": ok,
                "http_status": failure.http_status if failure else 200,
                "lookups_resumed": resumed,
            },
        )
    if ok:
        how = "the API secret (retired on 2027-03-03)" if credentials.uses_api_secret else "the service account"
        return True, f"profile query answered with {how}" + ("; lookups resumed" if resumed else "")
    if ok is False:
        return False, f"profile query refused the credential (HTTP {failure.http_status}); lookups are paused"
    return None, f"profile query said nothing about the credential ({failure})"


# --- lookups -------------------------------------------------------------------------------------------


def lookups_open(*, request_ids: Sequence[int], actor: Actor | None = None) -> int:
    """Queue a lookup in every queryable project of each verified request that has none yet; return how many.

    Call it in the transaction that made the requests verified (or after its commit). Audits one event per
    request that got lookups, with the count.
    """
    ids = list({int(pk) for pk in request_ids})
    if not ids:
        return 0
    through = DataSubjectRequest.projects.through
    pairs = list(
        through.objects.filter(
            datasubjectrequest_id__in=ids,
            datasubjectrequest__status=states.VERIFIED,
            mixpanelproject__in=queryable_projects(),
        )
        .exclude(datasubjectrequest__email_hash="")  # no email (a cohort member without one): nothing to ask
        .values_list("datasubjectrequest_id", "mixpanelproject_id")
    )
    if not pairs:
        return 0
    existing = set(IdentityLookup.objects.filter(request_id__in=ids).values_list("request_id", "project_id"))
    new = [(r, p) for r, p in pairs if (r, p) not in existing]
    if not new:
        return 0
    now = timezone.now()
    IdentityLookup.objects.bulk_create(
        [IdentityLookup(request_id=r, project_id=p, queued_at=now, not_before=now) for r, p in new],
        ignore_conflicts=True,
    )
    per_request: dict[int, int] = {}
    for request_id, _project in new:
        per_request[request_id] = per_request.get(request_id, 0) + 1
    references = dict(DataSubjectRequest.objects.filter(pk__in=per_request).values_list("pk", "reference"))
    audit_record_many(
        [
            Entry(
                action="identity.lookup_queued",
                actor=actor or Actor.system("identity lookup"),
                request_reference=references[request_id],
                payload={"project_count": count},
            )
            for request_id, count in sorted(per_request.items())
        ]
    )
    return len(new)


CATCH_UP_LIMIT = 1000


def lookups_catch_up() -> int:
    """Queue the lookups the hooks missed: verified requests with a queryable project and no lookup there (a
    hook that failed after its commit, a project that got Query API credentials later). Returns how many."""
    through = DataSubjectRequest.projects.through
    has_lookup = IdentityLookup.objects.filter(
        request_id=OuterRef("datasubjectrequest_id"), project_id=OuterRef("mixpanelproject_id")
    )
    missing = (
        through.objects.filter(datasubjectrequest__status=states.VERIFIED, mixpanelproject__in=queryable_projects())
        .exclude(datasubjectrequest__email_hash="")
        .exclude(Exists(has_lookup))
        .values_list("datasubjectrequest_id", flat=True)
        .distinct()[:CATCH_UP_LIMIT]
    )
    request_ids = list(missing)
    if not request_ids:
        return 0
    with transaction.atomic():
        return lookups_open(request_ids=request_ids)


def request_resolve_now(*, request: DataSubjectRequest, actor: Actor) -> int:
    """Look the request's email up again now in each queryable project of it; return the lookups queued.

    A lookup that is running is left to finish. Earlier candidates stay (staff's decisions on them too).
    """
    with transaction.atomic():
        locked = DataSubjectRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status not in (states.VERIFIED, states.ON_HOLD):
            raise ServiceError(
                f"Request {locked.reference} is {locked.status}: emails are looked up for verified requests only."
            )
        if not locked.email_hash:
            raise ServiceError(f"Request {locked.reference} has no email address to look up: enter its ids by hand.")
        projects = list(queryable_projects().filter(requests=locked).order_by("name"))
        if not projects:
            raise ServiceError(
                f"No project of request {locked.reference} has Query API credentials "
                "(mixpanel_project update NAME --service-account-username U --service-account-secret-file F)."
            )
        now = timezone.now()
        queued = 0
        for project in projects:
            lookup, created = IdentityLookup.objects.get_or_create(
                request=locked, project=project, defaults={"queued_at": now, "not_before": now}
            )
            if created:
                queued += 1
                continue
            queued += (
                IdentityLookup.objects.filter(pk=lookup.pk)
                .exclude(status=LookupStatus.RUNNING)
                .update(
                    status=LookupStatus.WAITING,
                    queued_at=now,
                    not_before=now,
                    attempts=0,
                    error="",
                    claim_token="",
                    claimed_until=None,
                    finished_at=None,
                )
            )
        audit_record(
            action="identity.lookup_requested",
            actor=actor,
            request_reference=locked.reference,
            payload={"project_count": len(projects), "queued": queued},
        )
    return queued


def approval_blocker(request: DataSubjectRequest) -> str:
    """Why a request without distinct ids must wait for its lookups ("" otherwise): registered with the request
    services as an approval blocker. A request that already has ids is never held back here."""
    if request.distinct_ids:
        return ""
    lookups = list(
        IdentityLookup.objects.filter(request_id=request.pk).select_related("project").order_by("project__name")
    )
    running = [lk.project.name for lk in lookups if lk.status in OPEN_LOOKUP and not lk.project.lookup_paused_at]
    if running:
        return f"a Mixpanel lookup of its email is still running in {', '.join(running)}"
    if IdentityCandidate.objects.filter(request_id=request.pk, state=CandidateState.PENDING).exists():
        return "profiles found for its email await review: accept or reject them"
    paused = [lk.project.name for lk in lookups if lk.status in OPEN_LOOKUP and lk.project.lookup_paused_at]
    if paused:
        return (
            f"lookups are paused in {', '.join(paused)} (Mixpanel refused the Query API credential); "
            "enter distinct ids by hand or renew the credential"
        )
    failed = [lk.project.name for lk in lookups if lk.status == LookupStatus.FAILED]
    if failed:
        return f"the Mixpanel lookup failed in {', '.join(failed)}; enter distinct ids by hand or look up again"
    empty = [lk.project.name for lk in lookups if lk.status == LookupStatus.DONE and lk.candidate_count == 0]
    if empty and len(empty) == len(lookups):
        return f"no profile found for this email in {', '.join(empty)}; enter distinct ids by hand"
    return ""


def lookup_summary(lookup: IdentityLookup) -> str:
    """One line for staff about a lookup (no personal data)."""
    project = lookup.project.name
    if lookup.project.lookup_paused_at and lookup.status in OPEN_LOOKUP:
        return f"paused in {project}: {lookup.project.lookup_paused_reason or 'the credential was refused'}"
    if lookup.status == LookupStatus.WAITING:
        return f"waiting to query {project}" + (f" (retry after: {lookup.error})" if lookup.error else "")
    if lookup.status == LookupStatus.RUNNING:
        return f"querying {project}"
    if lookup.status == LookupStatus.FAILED:
        return lookup.error or "lookup failed"
    if lookup.candidate_count == 0:
        return (
            f"no profile found for this email in {project} (Mixpanel may hide profiles the service account "
            "may not read, so this is not proof of absence)"
        )
    return f"{lookup.candidate_count} profile(s) found in {project}"


# --- candidates ----------------------------------------------------------------------------------------


def _decide(
    *, request: DataSubjectRequest, distinct_ids: Sequence[str] | None, accept: bool, actor: Actor
) -> list[IdentityCandidate]:
    """Accept or reject the request's candidates with these ids (None: every pending one)."""
    target = CandidateState.ACCEPTED if accept else CandidateState.REJECTED
    with transaction.atomic():
        locked = DataSubjectRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status not in _EDITABLE:
            raise ServiceError(f"Request {locked.reference} is {locked.status}: its ids can no longer change.")
        candidates = IdentityCandidate.objects.select_for_update().filter(request=locked)
        if distinct_ids is None:
            chosen = list(candidates.filter(state=CandidateState.PENDING).order_by("id"))
            if not chosen:
                raise ServiceError(f"Request {locked.reference} has no candidate awaiting review.")
        else:
            wanted = list(dict.fromkeys(str(i).strip() for i in distinct_ids if str(i).strip()))
            if not wanted:
                raise ServiceError("Name at least one distinct id.")
            chosen = list(candidates.filter(distinct_id__in=wanted).order_by("id"))
            found = {c.distinct_id for c in chosen}
            missing = [i for i in wanted if i not in found]
            if missing:
                raise ServiceError(
                    f"{len(missing)} of the ids given are not candidates of request {locked.reference}: "
                    "see its candidates (dsr candidates REF)."
                )
        changed = [c for c in chosen if c.state != target]
        if not changed:
            return chosen
        now = timezone.now()
        user_id = int(actor.id) if actor.id else None
        IdentityCandidate.objects.filter(pk__in=[c.pk for c in changed]).update(
            state=target, decided_at=now, decided_by_id=user_id
        )
        ids = list(locked.distinct_ids or [])
        if accept:
            ids += [c.distinct_id for c in changed if c.distinct_id not in ids]
        else:
            # Rejecting a candidate that had been accepted takes its id back out of the request.
            taken_back = {c.distinct_id for c in changed if c.state == CandidateState.ACCEPTED}
            ids = [i for i in ids if i not in taken_back]
        if ids != list(locked.distinct_ids or []):
            request_set_distinct_ids(request=locked, distinct_ids=ids, actor=actor)
        audit_record(
            action="identity.candidates_accepted" if accept else "identity.candidates_rejected",
            actor=actor,
            request_reference=locked.reference,
            payload={"count": len(changed), "distinct_id_count": len(ids)},
        )
        for candidate in changed:
            candidate.state, candidate.decided_at, candidate.decided_by_id = target, now, user_id
    request.distinct_ids = ids
    return chosen


def candidate_accept(
    *, request: DataSubjectRequest, distinct_ids: Sequence[str] | None = None, actor: Actor
) -> list[IdentityCandidate]:
    """Accept candidates (by id, or every pending one with ``distinct_ids=None``): their ids join the request."""
    return _decide(request=request, distinct_ids=distinct_ids, accept=True, actor=actor)


def candidate_reject(
    *, request: DataSubjectRequest, distinct_ids: Sequence[str], actor: Actor
) -> list[IdentityCandidate]:
    """Reject candidates by id: they stay recorded as rejected, and leave the request's ids if accepted before."""
    return _decide(request=request, distinct_ids=list(distinct_ids), accept=False, actor=actor)


def candidates_purge() -> int:
    """Delete the candidates of requests whose personal data was purged (their ids and names with them)."""
    deleted, _ = IdentityCandidate.objects.filter(request__purged_at__isnull=False).delete()
    return deleted


def candidates_for(request: DataSubjectRequest) -> list[dict[str, Any]]:
    """The request's candidates as staff and the CLI see them (personal data: for staff only)."""
    return [
        {
            "distinct_id": c.distinct_id,
            "project": c.project.name,
            "matched_property": c.matched_property,
            "last_seen": c.last_seen,
            "state": c.state,
        }
        for c in IdentityCandidate.objects.filter(request=request)
        .select_related("project")
        .order_by("project__name", "id")
    ]
