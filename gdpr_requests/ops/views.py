"""Operational endpoints: liveness, readiness and Prometheus metrics.

All three are cheap and carry no personal data: counts, states and ages only, never a reference, an email or a
distinct id. ``/metrics`` answers to a bearer token (``METRICS_TOKEN``); with no token configured it answers
only to clients on the loopback interface that did not come through a proxy.

``/readyz`` is for load balancers: can this web process serve (database, broker, cache)? ``/readyz?deep`` is
for monitoring and adds what the web process does not need to serve but the service needs to work: a Celery
worker answering a ping, beat ticking (ops/heartbeat.py), and the audit trail's append-only triggers.
A check that cannot be asked on this setup (a broker without broadcast, a per-process cache) answers
"unknown", which is not a failure.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gdpr_requests.audit import queries as audit_queries
from gdpr_requests.audit import triggers as audit_triggers
from gdpr_requests.models import (
    ApiCall,
    DataSubjectRequest,
    MixpanelTask,
    TaskState,
)
from gdpr_requests.notifications import outbox
from gdpr_requests.ops import heartbeat
from gdpr_requests.pipeline.task_states import DISPATCHABLE
from gdpr_requests.requests import selectors, states

logger = logging.getLogger(__name__)

# A readiness probe must answer well within a load balancer's timeout even when a dependency hangs.
PROBE_TIMEOUT_SECONDS = 2.0
# A ping waits this long for every worker's answer (it cannot know how many there are), so keep it short.
WORKER_PING_TIMEOUT_SECONDS = 1.0

OK, UNAVAILABLE, UNKNOWN = "ok", "unavailable", "unknown"

# Headers a reverse proxy adds. A request carrying one came from somewhere else, even if the proxy itself
# connects from 127.0.0.1, so it does not count as a loopback client for token-less /metrics.
_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED", "HTTP_X_FORWARDED_HOST")


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Process up. Cheap, no database."""
    return JsonResponse({"status": "ok"})


# --- readiness ----------------------------------------------------------------------------------------
def _check_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        # A dead connection must not be reused by the next request of this worker.
        connection.close()
        raise


def _ping_redis(url: str) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # A fresh client without retries: redis-py's default retries would multiply the timeout, and a pooled
    # connection could hide a restart until the next real command.
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
        socket_timeout=PROBE_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
    finally:
        client.close()


def _check_broker() -> None:
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://", "unix://")):
        _ping_redis(url)
    elif url.startswith("filesystem://"):
        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in", "")
        if not (folder and os.path.isdir(folder) and os.access(folder, os.W_OK)):
            raise OSError("broker folder missing or not writable")
    else:
        from compliance.celery import app

        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT_SECONDS)


def _check_cache() -> None:
    _ping_redis(settings.CACHES["default"]["LOCATION"])


class CannotTell(Exception):
    """This setup gives no way to ask (the check answers "unknown")."""


def _check_workers() -> None:
    from compliance.celery import app

    # A ping is a broadcast: a transport without fanout exchanges cannot carry it. (kombu 5.7's filesystem
    # transport can, through its control folder, as can Redis and the in-memory one.)
    with app.connection_for_read() as conn:
        if "fanout" not in conn.transport.implements.exchange_type:
            raise CannotTell("the broker has no broadcast, so workers cannot be pinged")
    if not app.control.ping(timeout=WORKER_PING_TIMEOUT_SECONDS):
        raise RuntimeError("no worker answered the ping")


def _check_beat() -> None:
    if not heartbeat.cache_is_shared():
        raise CannotTell("the cache is per process: beat's heartbeat cannot be read here")
    if heartbeat.beat_is_stale(heartbeat.beat_heartbeat_age()):
        raise RuntimeError("beat has not ticked recently")


def _check_audit_triggers() -> None:
    if audit_triggers.missing(connection):
        raise RuntimeError("append-only triggers missing or disabled")


def _readiness_checks(*, deep: bool = False) -> dict[str, Any]:
    checks = {"database": _check_database, "broker": _check_broker}
    cache = settings.CACHES["default"]
    # The cache holds the public rate limits; it is its own dependency only when it is not the broker's Redis.
    if cache["BACKEND"].endswith("RedisCache") and cache.get("LOCATION") != settings.CELERY_BROKER_URL:
        checks["cache"] = _check_cache
    if deep:
        checks.update(workers=_check_workers, beat=_check_beat, audit_triggers=_check_audit_triggers)
    return checks


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Database and broker reachable (with ``?deep``: also workers, beat, audit triggers): 200, or 503 naming
    what is not (no host names, no error text)."""
    results: dict[str, str] = {}
    for name, check in _readiness_checks(deep="deep" in request.GET).items():
        if name == "workers" and results.get("broker") == UNAVAILABLE:
            # Workers are reached through the broker: a ping would only wait out kombu's connection retries.
            results[name] = UNAVAILABLE
            continue
        try:
            check()
        except CannotTell:
            results[name] = UNKNOWN
        except Exception as exc:
            # The exception text can name hosts and credentials in a URL: log its class only.
            logger.warning("readiness check failed", extra={"check": name, "error": type(exc).__name__})
            results[name] = UNAVAILABLE
        else:
            results[name] = OK
    failing = sorted(name for name, result in results.items() if result == UNAVAILABLE)
    body: dict[str, Any] = {"status": UNAVAILABLE if failing else OK, "checks": results}
    if failing:
        body["failing"] = failing
    return JsonResponse(body, status=503 if failing else 200)


# --- metrics ------------------------------------------------------------------------------------------
class DsrCollector(Collector):
    """Reads the numbers at scrape time from a few grouped queries on indexed columns.

    Every query is either a GROUP BY over an indexed column or an index lookup (MAX(sequence), MIN of
    next_attempt_at within the active states), so a scrape costs the same whatever the table sizes.
    """

    def collect(self) -> Iterator[Any]:
        now = timezone.now()

        by_status = dict(
            DataSubjectRequest.objects.order_by().values("status").annotate(n=Count("id")).values_list("status", "n")
        )
        requests = GaugeMetricFamily("dsr_requests", "Data subject requests by status.", labels=["status"])
        for status in sorted(states.ALL_STATES):
            requests.add_metric([status], by_status.get(status, 0))
        yield requests

        # The staff workspace's definition, so the two never disagree; uses the (status, due_at) index.
        overdue = DataSubjectRequest.objects.filter(selectors.overdue_q()).count()
        yield GaugeMetricFamily("dsr_requests_overdue", "Open requests past their due date.", value=overdue)

        by_state = dict(
            MixpanelTask.objects.order_by().values("state").annotate(n=Count("id")).values_list("state", "n")
        )
        tasks = GaugeMetricFamily("dsr_mixpanel_tasks", "Mixpanel tasks by local state.", labels=["state"])
        for state in TaskState.values:
            tasks.add_metric([state], by_state.get(state, 0))
        yield tasks

        oldest_due = MixpanelTask.objects.filter(state__in=DISPATCHABLE, next_attempt_at__lte=now).aggregate(
            oldest=Min("next_attempt_at")
        )["oldest"]
        age = max(0.0, (now - oldest_due).total_seconds()) if oldest_due else 0.0
        yield GaugeMetricFamily(
            "dsr_mixpanel_oldest_due_task_age_seconds",
            "How long the most overdue active Mixpanel task has waited past its next attempt time (0: none due).",
            value=age,
        )

        yield GaugeMetricFamily(
            "dsr_subject_email_oldest_unsent_age_seconds",
            "How long the oldest subject email still to send has waited (0: none waiting).",
            value=_oldest_unsent_email_age(now),
        )

        calls = CounterMetricFamily(
            "dsr_mixpanel_api_calls", "HTTP calls to Mixpanel by project and outcome.", labels=["project", "outcome"]
        )
        grouped = (
            ApiCall.objects.order_by()
            .values("project_id", "project__name", "outcome")
            .annotate(n=Count("id"))
            .values_list("project_id", "project__name", "outcome", "n")
        )
        for project_id, name, outcome, count in grouped:
            calls.add_metric([name or str(project_id), outcome], count)
        yield calls

        waits = _rate_limit_waits()
        if waits is not None:
            yield CounterMetricFamily(
                "dsr_mixpanel_rate_limit_waits",
                "Times a Mixpanel call had to wait for the shared per-project rate limiter.",
                value=waits,
            )

        # The sequence has no gaps (verification refuses them), so the last one is the length: an index
        # lookup where count(*) would scan the whole trail.
        length, head_sequence = audit_queries.length_and_head_sequence()
        yield GaugeMetricFamily("dsr_audit_chain_length", "Number of events in the audit trail.", value=length)
        # Kept by the monitoring system outside the database: a value that goes down, or a length below it,
        # shows events deleted from the end.
        yield GaugeMetricFamily(
            "dsr_audit_head_sequence",
            "Sequence of the audit chain head checkpoint (moves forward only).",
            value=head_sequence,
        )


def _oldest_unsent_email_age(now: datetime) -> float:
    """Age in seconds of the oldest subject email not sent yet, 0 when none waits. The outbox's definition, so the
    metric and the resend sweep agree on what "unsent" means."""
    return outbox.oldest_unsent_email_age_seconds() or 0.0


def _rate_limit_waits() -> float | None:
    # Imported lazily: the limiter belongs to the pipeline and may talk to Redis.
    try:
        from gdpr_requests.mixpanel import ratelimit
    except ImportError:
        return None
    wait_count = getattr(ratelimit, "wait_count", None)
    if wait_count is None:
        return None
    try:
        return float(wait_count())
    except Exception as exc:
        logger.warning("rate limiter wait count unavailable", extra={"error": type(exc).__name__})
        return None


def _is_loopback_client(request: HttpRequest) -> bool:
    if any(header in request.META for header in _PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def _authorised(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return _is_loopback_client(request)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition of the collector above, for holders of METRICS_TOKEN."""
    if not _authorised(request):
        response = HttpResponse("Metrics need a bearer token (METRICS_TOKEN).\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DsrCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
