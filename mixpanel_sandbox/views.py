"""A built-in stand-in for Mixpanel's GDPR API v3, so the product runs end to end with no Mixpanel account.

It serves the contract of MIXPANEL_GDPR_API.md under ``/sandbox/mixpanel/api/app/`` (mounted, and answering,
only when ``MIXPANEL_SANDBOX_ENABLED``): a project whose ``base_url_override`` is
``<SITE_URL>/sandbox/mixpanel/api/app`` works with the real client unchanged.

How it behaves, and why:
- The ``?token=`` must be a MixpanelProject's project token and ``Authorization: Bearer`` that project's OAuth
  token, as stored here; anything else is 401, the way Mixpanel refuses a credential.
- A task's status is computed from its age (``MIXPANEL_SANDBOX_STEP_SECONDS`` per step: PENDING, STAGING,
  STARTED, then SUCCESS or FAILURE), so no background process is needed and time-travel in tests just works.
- One call per second per project token (``MIXPANEL_SANDBOX_RATE_LIMIT``), held in the shared cache when it is
  Redis (or another shared backend) and in the database otherwise, so several web processes enforce one limit.
- Fault knobs (``MIXPANEL_SANDBOX_FAULT_429``, ``_5XX``, ``_SLOW``, ``_FAILURE``) are probabilities 0..1.
- A retrieval's result link is signed and expires (django.core.signing); it serves a ZIP of synthetic events,
  AES-encrypted with the project's API secret when the project has one, as Mixpanel's archives are.

The sandbox stands in for a third party, so its writes are not audited: the pipeline audits every call it makes.
Nothing here logs a token, a distinct id or a download link.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import math
import random
import secrets
import time
import uuid
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyzipper
from django.conf import settings
from django.core import signing
from django.core.cache import cache, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from gdpr_requests.models import MixpanelProject, TaskKind
from mixpanel_sandbox.models import SandboxRateSlot, SandboxTask

logger = logging.getLogger(__name__)

PENDING, STAGING, STARTED, SUCCESS, FAILURE, REVOKED = "PENDING", "STAGING", "STARTED", "SUCCESS", "FAILURE", "REVOKED"
# The statuses a task passes through, one per MIXPANEL_SANDBOX_STEP_SECONDS; the last step is final.
PROGRESSION = (PENDING, STAGING, STARTED)
CANCELLABLE = frozenset({PENDING, STAGING})
FINAL = frozenset({SUCCESS, FAILURE, REVOKED})

MAX_DISTINCT_IDS = 2000  # the documented per-request limit (the project's batch size defaults to 1999)
MAX_DISTINCT_ID_LENGTH = 255
COMPLIANCE_TYPES = ("GDPR", "CCPA")
DISCLOSURE_TYPES = ("Data", "Categories", "Sources")

RATE_WINDOW_SECONDS = 1.0
RATE_LIMIT_MESSAGE = "this API is limited to 1 req/s"
# A "slow" fault sleeps between half of this and all of it: long enough to notice, never near a client timeout.
SLOW_MAX_SECONDS = 3.0
# How long a result link stays valid after the status poll that produced it.
LINK_MAX_AGE_SECONDS = 3600
LINK_SALT = "gdpr_requests.mixpanel.sandbox.result-link"
DEMO_REQUESTING_USER = "sandbox-owner@example.com"

# Randomness of the fault knobs and of the synthetic data; tests seed nothing and set probabilities to 0 or 1.
_random = random.SystemRandom()


# --- simulator logic ----------------------------------------------------------------------------------


def task_status(task: SandboxTask, *, now: datetime | None = None) -> str:
    """The status a sandbox task has at ``now``: one step of MIXPANEL_SANDBOX_STEP_SECONDS per status."""
    if task.revoked_at is not None:
        return REVOKED
    now = now or timezone.now()
    step = float(settings.MIXPANEL_SANDBOX_STEP_SECONDS)
    elapsed = (now - task.created_at).total_seconds()
    index = len(PROGRESSION) if step <= 0 else max(0, int(elapsed // step))
    if index < len(PROGRESSION):
        return PROGRESSION[index]
    return FAILURE if task.will_fail else SUCCESS


def _final_cutoff(now: datetime, steps: int) -> datetime:
    # Tasks created after this moment are still within their first ``steps`` steps.
    step = max(0.0, float(settings.MIXPANEL_SANDBOX_STEP_SECONDS))
    return now - timedelta(seconds=step * steps)


def running_deletions(*, project_token: str, now: datetime | None = None) -> list[SandboxTask]:
    """Deletion tasks of a project that are not final yet (PENDING, STAGING or STARTED)."""
    now = now or timezone.now()
    return list(
        SandboxTask.objects.filter(
            project_token=project_token,
            kind=TaskKind.DELETION,
            revoked_at__isnull=True,
            created_at__gt=_final_cutoff(now, len(PROGRESSION)),
        ).order_by("created_at")
    )


def deletion_conflicts(*, project_token: str, distinct_ids: list[str]) -> tuple[list[str], list[str]]:
    """The ids of ``distinct_ids`` that a running deletion already covers, and those deletions' tracking ids."""
    wanted = set(distinct_ids)
    conflicting_ids: list[str] = []
    task_ids: list[str] = []
    seen: set[str] = set()
    for task in running_deletions(project_token=project_token):
        overlap = wanted.intersection(task.distinct_ids)
        if not overlap:
            continue
        task_ids.append(task.tracking_id)
        for distinct_id in distinct_ids:
            if distinct_id in overlap and distinct_id not in seen:
                seen.add(distinct_id)
                conflicting_ids.append(distinct_id)
    return conflicting_ids, task_ids


def _new_tracking_id(kind: str) -> str:
    # Mixpanel's task ids are opaque: numeric strings and UUIDs both occur. Deletions get the one and
    # retrievals the other, so every run exercises both in the client and the pipeline.
    if kind == TaskKind.DELETION:
        return str(10**11 + secrets.randbelow(9 * 10**11))
    return str(uuid.uuid4())


def sandbox_task_create(
    *,
    project: MixpanelProject,
    kind: str,
    distinct_ids: list[str],
    compliance_type: str,
    disclosure_type: str = "",
    will_fail: bool = False,
) -> SandboxTask:
    """Record a new simulated task (PENDING from now). Not audited: the sandbox plays Mixpanel, not us."""
    for _attempt in range(5):
        try:
            with transaction.atomic():
                return SandboxTask.objects.create(
                    tracking_id=_new_tracking_id(kind),
                    kind=kind,
                    project=project,
                    project_token=project.project_token,
                    compliance_type=compliance_type,
                    disclosure_type=disclosure_type,
                    distinct_ids=distinct_ids,
                    will_fail=will_fail,
                )
        except IntegrityError:
            continue  # a tracking id collision; draw another
    raise RuntimeError("could not allocate a unique sandbox tracking id")


def sandbox_task_cancel(*, task: SandboxTask, now: datetime | None = None) -> bool:
    """Revoke a deletion that is still PENDING or STAGING; False when it has started or is final.

    A conditional UPDATE, so a cancel racing the task's own progress (or another cancel) cannot revoke a
    task that has already started.
    """
    now = now or timezone.now()
    revoked = SandboxTask.objects.filter(
        pk=task.pk,
        kind=TaskKind.DELETION,
        revoked_at__isnull=True,
        created_at__gt=_final_cutoff(now, len(CANCELLABLE)),
    ).update(revoked_at=now)
    if revoked:
        task.revoked_at = now
    return bool(revoked)


def _shared_cache_available() -> bool:
    # A per-process cache would give every web process its own allowance: fall back to the database then.
    # (``cache`` is a proxy; the backend object itself is in ``caches``.)
    return not isinstance(caches["default"], LocMemCache | DummyCache)


def _rate_key(project_token: str) -> str:
    return "sandbox:mixpanel:rate:" + hashlib.sha256(project_token.encode()).hexdigest()[:32]


def take_rate_slot(*, project_token: str) -> float | None:
    """Take the project's one call for this second. None when granted, else the seconds until the next slot.

    A call is granted when none was granted for the same project token in the previous RATE_WINDOW_SECONDS.
    Refused calls do not push the window out, as with Mixpanel: a client that waits one second gets in.
    """
    if _shared_cache_available():
        now = time.time()
        if cache.add(_rate_key(project_token), now, timeout=RATE_WINDOW_SECONDS):
            return None
        last = cache.get(_rate_key(project_token))
        waited = now - last if isinstance(last, int | float) else 0.0
        return max(0.0, RATE_WINDOW_SECONDS - waited)

    now = timezone.now()
    cutoff = now - timedelta(seconds=RATE_WINDOW_SECONDS)
    # Conditional UPDATE: of two processes racing for the same slot, exactly one changes the row.
    if SandboxRateSlot.objects.filter(project_token=project_token, last_call_at__lte=cutoff).update(last_call_at=now):
        return None
    try:
        with transaction.atomic():
            SandboxRateSlot.objects.create(project_token=project_token, last_call_at=now)
        return None
    except IntegrityError:
        pass  # the row exists, so its last call was within the window
    last_call = SandboxRateSlot.objects.filter(project_token=project_token).values_list("last_call_at", flat=True)
    waited = (now - last_call[0]).total_seconds() if last_call else 0.0
    return max(0.0, RATE_WINDOW_SECONDS - waited)


def _happens(probability: float) -> bool:
    probability = float(probability or 0.0)
    return probability >= 1.0 or (probability > 0.0 and _random.random() < probability)


def _numeric_project_id(project: MixpanelProject | None) -> int:
    # Mixpanel sends project_id as a number; ours is stored as text and may be anything a person typed.
    if project is not None and project.mixpanel_project_id.strip().isdigit():
        return int(project.mixpanel_project_id.strip())
    return 1_000_000 + (project.pk if project is not None else 0)


# --- synthetic archive ---------------------------------------------------------------------------------

_EVENT_NAMES = ("Sign Up", "Log In", "Page View", "Search", "Add To Cart", "Purchase", "Share", "Log Out")
_CITIES = ("Lisbon", "Dublin", "Berlin", "Austin", "Pune", "Toronto", "Lyon", "Osaka")
_BROWSERS = ("Firefox", "Chrome", "Safari", "Edge")
_OS = ("Linux", "Windows", "Mac OS X", "Android", "iOS")
_CATEGORIES = ("Identifiers", "Internet or other electronic network activity", "Geolocation data", "Commercial")
_SOURCES = ("Mixpanel JavaScript SDK", "Mixpanel iOS SDK", "Mixpanel HTTP ingestion API", "Warehouse Connectors")


def _events_for(rng: random.Random, distinct_id: str, *, since: datetime, until: datetime) -> list[dict[str, Any]]:
    span = max(1, int((until - since).total_seconds()))
    events = []
    for _ in range(rng.randint(3, 8)):
        when = since + timedelta(seconds=rng.randrange(span))
        events.append(
            {
                "event": rng.choice(_EVENT_NAMES),
                "properties": {
                    "time": int(when.timestamp()),
                    "distinct_id": distinct_id,
                    "$insert_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                    "$browser": rng.choice(_BROWSERS),
                    "$os": rng.choice(_OS),
                    "$city": rng.choice(_CITIES),
                    "mp_lib": "web",
                    "amount": round(rng.uniform(1, 500), 2),
                },
            }
        )
    events.sort(key=lambda event: event["properties"]["time"])
    return events


def archive_members(task: SandboxTask, *, now: datetime | None = None) -> dict[str, bytes]:
    """The files of a retrieval's archive: synthetic, but the same for the same task every time.

    Data (the default) gives every id's events and profile; a CCPA Categories or Sources disclosure gives
    only those lists, as Mixpanel does. A CCPA retrieval covers the previous year, a GDPR one three.
    File names never derive from distinct ids, which may contain slashes.
    """
    now = now or timezone.now()
    until = task.created_at
    since = until - timedelta(days=365 if task.compliance_type == "CCPA" else 3 * 365)
    disclosure = task.disclosure_type or "Data"
    members: dict[str, bytes] = {}
    if disclosure == "Categories":
        members["categories.json"] = _dump({"categories": list(_CATEGORIES)})
    elif disclosure == "Sources":
        members["sources.json"] = _dump({"sources": list(_SOURCES)})
    else:
        events: list[dict[str, Any]] = []
        profiles: list[dict[str, Any]] = []
        for distinct_id in task.distinct_ids:
            rng = random.Random(f"{task.tracking_id}:{distinct_id}")
            own_events = _events_for(rng, distinct_id, since=since, until=until)
            events.extend(own_events)
            times = [event["properties"]["time"] for event in own_events]
            profiles.append(
                {
                    "$distinct_id": distinct_id,
                    "$properties": {
                        "$created": _iso(datetime.fromtimestamp(min(times), UTC)),
                        "$last_seen": _iso(datetime.fromtimestamp(max(times), UTC)),
                        "$city": rng.choice(_CITIES),
                        "plan": rng.choice(("free", "pro", "enterprise")),
                        "lifetime_value": round(rng.uniform(0, 5000), 2),
                        "sessions": rng.randint(1, 400),
                    },
                }
            )
        members["events.json"] = _dump(events)
        members["profiles.json"] = _dump(profiles)
    manifest = {
        "tracking_id": task.tracking_id,
        "compliance_type": task.compliance_type,
        "disclosure_type": disclosure,
        "distinct_id_count": len(task.distinct_ids),
        "generated_at": _iso(now),
        "files": sorted(members),
        "note": "Synthetic data from the built-in Mixpanel sandbox.",
    }
    return {"manifest.json": _dump(manifest), **members}


def _iso(moment: datetime) -> str:
    # Mixpanel's style: ISO time in UTC without a zone.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _dump(value: Any) -> bytes:
    return json.dumps(value, indent=1, ensure_ascii=False).encode()


def build_archive(members: dict[str, bytes], *, password: str = "") -> bytes:
    """A ZIP of ``members``: AES-256 encrypted (WinZip AES, as pyzipper writes it) when a password is given."""
    buffer = io.BytesIO()
    if password:
        with pyzipper.AESZipFile(buffer, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as archive:
            archive.setpassword(password.encode())
            archive.setencryption(pyzipper.WZ_AES, nbits=256)
            for name, data in members.items():
                archive.writestr(name, data)
    else:
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    return buffer.getvalue()


def result_link(request: HttpRequest, task: SandboxTask) -> str:
    """An absolute, signed and expiring link to a retrieval's archive, on the host the client called."""
    signed = signing.dumps({"t": task.tracking_id}, salt=LINK_SALT, compress=True)
    return request.build_absolute_uri(reverse("mixpanel_sandbox:download", args=[signed]))


# --- HTTP layer ---------------------------------------------------------------------------------------


def _error(status: int, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"status": "error", "error": message}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _not_enabled() -> JsonResponse | None:
    # Checked in every view as well as at mount time, so that turning the setting off is enough.
    if not settings.MIXPANEL_SANDBOX_ENABLED:
        return _error(404, "not found")
    return None


def _method_not_allowed(allowed: list[str]) -> JsonResponse:
    return _error(405, f"method not allowed (allowed: {', '.join(allowed)})", Allow=", ".join(allowed))


def _authenticate(request: HttpRequest) -> MixpanelProject | JsonResponse:
    token = request.GET.get("token", "").strip()
    if not token:
        return _error(401, "missing project token: add ?token=<project token>")
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return _error(
            401,
            "missing credentials: send Authorization: Bearer <GDPR OAuth token>",
            WWW_Authenticate='Bearer realm="mixpanel-sandbox"',
        )
    projects = list(MixpanelProject.objects.filter(project_token=token))
    if not projects:
        return _error(401, "unknown project token")
    for project in projects:
        if project.oauth_token and hmac.compare_digest(project.oauth_token.encode(), credential.encode()):
            return project
    return _error(401, "invalid OAuth token for this project", WWW_Authenticate='Bearer error="invalid_token"')


def _limits_and_faults(project: MixpanelProject) -> JsonResponse | None:
    """The answer Mixpanel's rate limit or an injected fault gives instead of the real one, if any."""
    if settings.MIXPANEL_SANDBOX_RATE_LIMIT:
        wait = take_rate_slot(project_token=project.project_token)
        if wait is not None:
            # The real limiter says when to come back; the injected 429s below do not, so that clients
            # meet both variants (a Retry-After header from Mixpanel is unconfirmed).
            return _error(429, RATE_LIMIT_MESSAGE, Retry_After=str(max(1, math.ceil(wait))))
    return _faults(allow_429=True)


def _faults(*, allow_429: bool) -> JsonResponse | None:
    if _happens(settings.MIXPANEL_SANDBOX_FAULT_SLOW):
        time.sleep(_random.uniform(SLOW_MAX_SECONDS / 2, SLOW_MAX_SECONDS))
    if _happens(settings.MIXPANEL_SANDBOX_FAULT_5XX):
        return _error(_random.choice((500, 502, 503)), "sandbox: injected server error")
    if allow_429 and _happens(settings.MIXPANEL_SANDBOX_FAULT_429):
        return _error(429, RATE_LIMIT_MESSAGE)
    return None


class _BadRequest(Exception):
    """A request body the API refuses; the message is safe to return (it never quotes the ids)."""


def _parse_body(request: HttpRequest) -> dict[str, Any]:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise _BadRequest("request body too large") from None
    if not raw.strip():
        raise _BadRequest("request body must be a JSON object with distinct_ids")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _BadRequest("request body must be a JSON object")
    return body


def _distinct_ids(body: dict[str, Any]) -> list[str]:
    ids = body.get("distinct_ids")
    if ids is None:
        raise _BadRequest("distinct_ids is required")
    if not isinstance(ids, list):
        raise _BadRequest("distinct_ids must be an array of strings")
    if not ids:
        raise _BadRequest("distinct_ids must not be empty")
    if len(ids) > MAX_DISTINCT_IDS:
        raise _BadRequest(f"distinct_ids may contain at most {MAX_DISTINCT_IDS} ids (got {len(ids)})")
    if not all(isinstance(value, str) and value.strip() for value in ids):
        raise _BadRequest("every distinct id must be a non-empty string")
    if any(len(value) > MAX_DISTINCT_ID_LENGTH for value in ids):
        raise _BadRequest(f"a distinct id may be at most {MAX_DISTINCT_ID_LENGTH} characters long")
    return list(dict.fromkeys(ids))  # duplicates are one id


def _choice(body: dict[str, Any], field: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(field, default)
    if value is None:
        return default
    if isinstance(value, str):
        for option in allowed:
            if value.strip().lower() == option.lower():
                return option
    raise _BadRequest(f"{field} must be one of {', '.join(allowed)}")


def _create(request: HttpRequest, project: MixpanelProject, kind: str) -> JsonResponse:
    try:
        body = _parse_body(request)
        distinct_ids = _distinct_ids(body)
        compliance_type = _choice(body, "compliance_type", COMPLIANCE_TYPES, "GDPR")
        disclosure_type = ""
        if kind == TaskKind.RETRIEVAL:
            disclosure_type = _choice(body, "disclosure_type", DISCLOSURE_TYPES, "Data")
    except _BadRequest as exc:
        return _error(400, str(exc))

    if kind == TaskKind.DELETION:
        conflicting_ids, task_ids = deletion_conflicts(project_token=project.project_token, distinct_ids=distinct_ids)
        if conflicting_ids:
            logger.info("sandbox: deletion refused, %d ids already have a running deletion", len(conflicting_ids))
            return JsonResponse(
                {
                    "status": "error",
                    "error": {
                        "conflicting_distinct_ids": conflicting_ids,
                        "conflicting_task_ids": task_ids,
                        "error": "a deletion is already running for some of these distinct ids",
                    },
                },
                status=409,
            )

    task = sandbox_task_create(
        project=project,
        kind=kind,
        distinct_ids=distinct_ids,
        compliance_type=compliance_type,
        disclosure_type=disclosure_type,
        will_fail=_happens(settings.MIXPANEL_SANDBOX_FAULT_FAILURE),
    )
    logger.info("sandbox: created %s task %s with %d ids", kind, task.tracking_id, len(distinct_ids))
    return JsonResponse({"status": "ok", "results": {"task_id": task.tracking_id}}, status=201)


def _deletion_payload(task: SandboxTask, project: MixpanelProject, status: str) -> dict[str, Any]:
    compliance_type = task.compliance_type
    if task.tracking_id.isdigit() and int(task.tracking_id) % 2:
        compliance_type = compliance_type.lower()  # Mixpanel answers in either case; make clients cope
    return {
        "tracking_id": task.tracking_id,
        "status": status,
        "requesting_user": project.token_owner_email or DEMO_REQUESTING_USER,
        "compliance_type": compliance_type,
        "project_id": _numeric_project_id(task.project or project),
        "date_requested": _iso(task.created_at),
        "distinct_ids": task.distinct_ids,
    }


def _find_task(project: MixpanelProject, kind: str, tracking_id: str) -> SandboxTask | None:
    return SandboxTask.objects.filter(tracking_id=tracking_id, kind=kind, project_token=project.project_token).first()


def _api_view(name: str, kind: str, methods: list[str]) -> Callable[..., HttpResponse]:
    """One view per (kind, collection or task): checks, auth, limits and faults, then the operation."""

    @csrf_exempt
    def view(request: HttpRequest, tracking_id: str | None = None) -> HttpResponse:
        refusal = _not_enabled()
        if refusal is not None:
            return refusal
        if request.method not in methods:
            return _method_not_allowed(methods)
        project = _authenticate(request)
        if isinstance(project, JsonResponse):
            return project
        refusal = _limits_and_faults(project)
        if refusal is not None:
            return refusal

        if tracking_id is None:
            return _create(request, project, kind)
        task = _find_task(project, kind, tracking_id)
        if task is None:
            return _error(404, "task not found")
        if request.method == "DELETE":
            if sandbox_task_cancel(task=task):
                logger.info("sandbox: revoked deletion task %s", task.tracking_id)
                return HttpResponse(status=204)
            status = task_status(task)
            return _error(400, f"the task is {status} and can no longer be cancelled (only PENDING or STAGING can)")

        status = task_status(task)
        if kind == TaskKind.DELETION:
            return JsonResponse({"status": "ok", "results": _deletion_payload(task, project, status)})
        link = result_link(request, task) if status == SUCCESS else ""
        return JsonResponse(
            {"status": "ok", "results": {"status": status, "result": link, "distinct_ids": task.distinct_ids}}
        )

    view.__name__ = view.__qualname__ = name
    return view


retrievals_collection = _api_view("retrievals_collection", TaskKind.RETRIEVAL, ["POST"])
retrieval_task = _api_view("retrieval_task", TaskKind.RETRIEVAL, ["GET"])
deletions_collection = _api_view("deletions_collection", TaskKind.DELETION, ["POST"])
deletion_task = _api_view("deletion_task", TaskKind.DELETION, ["GET", "DELETE"])


@csrf_exempt
def download(request: HttpRequest, signed: str) -> HttpResponse:
    """The archive behind a retrieval's result link: no authentication, like Mixpanel's; the signature is the key."""
    refusal = _not_enabled()
    if refusal is not None:
        return refusal
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed(["GET", "HEAD"])
    try:
        value = signing.loads(signed, salt=LINK_SALT, max_age=LINK_MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        return _error(410, "this link has expired: poll the task again for a fresh one")
    except signing.BadSignature:
        return _error(404, "not found")
    tracking_id = value.get("t") if isinstance(value, dict) else None
    task = (
        SandboxTask.objects.select_related("project").filter(tracking_id=tracking_id, kind=TaskKind.RETRIEVAL).first()
    )
    if task is None or task_status(task) != SUCCESS:
        return _error(404, "not found")
    refusal = _faults(allow_429=False)
    if refusal is not None:
        return refusal
    password = task.project.api_secret if task.project is not None else ""
    body = build_archive(archive_members(task), password=password)
    logger.info("sandbox: served the archive of retrieval task %s (%d bytes)", task.tracking_id, len(body))
    response = HttpResponse(body, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="gdpr-retrieval-{task.tracking_id}.zip"'
    response["Content-Length"] = str(len(body))
    response["Cache-Control"] = "private, no-store"
    return response
