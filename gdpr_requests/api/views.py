"""The API's endpoints. Each one checks its input with a serializer and calls one request service."""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import IntegrityError, connection, transaction
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import get_object_or_404
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gdpr_requests.api import idempotency
from gdpr_requests.api.errors import Conflict
from gdpr_requests.api.keys import actor_for_key
from gdpr_requests.api.serializers import (
    AuditFilterSerializer,
    AuditPageSerializer,
    ProblemSerializer,
    RequestCancelSerializer,
    RequestCreatedSerializer,
    RequestCreateSerializer,
    RequestFilterSerializer,
    RequestPageSerializer,
    RequestSerializer,
    request_links,
)
from gdpr_requests.audit.chain import event_record
from gdpr_requests.models import ApiKey, ApiScope, AuditEvent, Channel, DataSubjectRequest
from gdpr_requests.requests.services import (
    REFERENCE_ATTEMPTS,
    prepare_request,
    request_cancel,
    request_create_many,
    withdrawal_blocker,
)

READ, WRITE, AUDIT = ApiScope.REQUESTS_READ.value, ApiScope.REQUESTS_WRITE.value, ApiScope.AUDIT_READ.value
PROBLEMS = {code: ProblemSerializer for code in (400, 401, 403, 404, 409, 422, 429)}


class BearerKeyScheme(OpenApiAuthenticationExtension):
    target_class = "gdpr_requests.api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "An API key made with `manage.py api_key create`."}


def _own_requests(api_key: ApiKey):
    # A key sees the requests it made, nothing else: the product's systems need no view of the web form's.
    return DataSubjectRequest.objects.filter(api_key=api_key)


def _lock_external_id(api_key: ApiKey, external_id: str) -> None:
    """Serialise creations that carry the same external id for the same key, until the transaction ends, so the
    existence check before the INSERT cannot race. Other creations do not wait (SQLite's IMMEDIATE transactions
    serialise every write anyway). Without it the loser of a race would hit the unique constraint inside
    request_create_many, which takes any IntegrityError for a reference collision."""
    if connection.vendor != "postgresql":
        return
    digest = hashlib.sha256(f"api-external-id:{api_key.pk}:{external_id}".encode()).digest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest[:8], "big", signed=True)])


class RequestPagination(CursorPagination):
    # Ordered by id, which never changes: a page boundary cannot move under concurrent writes, so paging
    # neither skips nor repeats a request.
    ordering = "id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200


class RequestListCreateView(APIView):
    required_scopes = {"GET": READ, "POST": WRITE}

    @extend_schema(
        operation_id="requests_create",
        request=RequestCreateSerializer,
        responses={201: RequestCreatedSerializer, **PROBLEMS},
        parameters=[OpenApiParameter(idempotency.HEADER, str, OpenApiParameter.HEADER, required=False)],
        description="Take in a request (channel `api`). With an Idempotency-Key, a retry within 24 hours gets the "
        "first answer and creates nothing; the same key with another body is 422.",
    )
    def post(self, request: Request) -> Response:
        # The request row is saved without a savepoint (two round trips fewer while the audit chain is locked);
        # a reference collision, about one in a million, fails the transaction, which is then run again.
        for attempt in range(REFERENCE_ATTEMPTS):
            try:
                return self._post_once(request)
            except IntegrityError:
                if attempt == REFERENCE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _post_once(self, request: Request) -> Response:
        api_key: ApiKey = request.auth
        header = request.headers.get(idempotency.HEADER)
        data = request.data
        with transaction.atomic():
            if header is None:
                return self._create(api_key, data)
            claim = idempotency.claim(api_key=api_key, key=idempotency.clean_key(header), data=data)
            if claim.replay:
                return Response(
                    claim.record.response, status=claim.record.status_code, headers={"Idempotent-Replayed": "true"}
                )
            response = self._create(api_key, data)
            idempotency.remember(claim.record, status_code=response.status_code, response=response.data)
            return response

    def _create(self, api_key: ApiKey, data: Any) -> Response:
        serializer = RequestCreateSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data
        external_id = values.get("external_id") or None
        if external_id:
            _lock_external_id(api_key, external_id)
            existing = _own_requests(api_key).filter(external_id=external_id).values_list("reference", flat=True)
            if existing:
                raise Conflict(f"external_id is already used by request {existing[0]}.", field="external_id")
        actor = actor_for_key(api_key)
        dsr = prepare_request(
            kind=values["kind"],
            regulation=values["regulation"],
            email=values["email"],
            name=values["name"],
            distinct_ids=values["distinct_ids"],
            channel=Channel.API,
            received_at=values.get("received_at"),
            disclosure_type=values["disclosure_type"],
            verified_by_staff=values["identity_verified_by"].strip(),
            actor=actor,
        )
        dsr.api_key, dsr.external_id = api_key, external_id
        request_create_many([dsr], actor=actor, projects=values.get("projects"), retry_in_savepoint=False)
        body = {
            "reference": dsr.reference,
            "status": dsr.status,
            "due_at": dsr.due_at.isoformat(),
            "links": request_links(dsr),
        }
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["links"]["self"]})

    @extend_schema(
        operation_id="requests_list",
        parameters=[RequestFilterSerializer],
        responses={200: RequestPageSerializer, **PROBLEMS},
        description="This key's requests in the order they were made (cursor pagination: follow `next`).",
    )
    def get(self, request: Request) -> Response:
        filters = RequestFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        values = filters.validated_data
        queryset = _own_requests(request.auth)
        if "status" in values:
            queryset = queryset.filter(status=values["status"])
        if "kind" in values:
            queryset = queryset.filter(kind=values["kind"])
        if "updated_since" in values:
            queryset = queryset.filter(updated_at__gte=values["updated_since"])
        if "external_id" in values:
            queryset = queryset.filter(external_id=values["external_id"])
        paginator = RequestPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(RequestSerializer(page, many=True).data)


class RequestDetailView(APIView):
    required_scopes = {"GET": READ}

    @extend_schema(operation_id="requests_retrieve", responses={200: RequestSerializer, **PROBLEMS})
    def get(self, request: Request, reference: str) -> Response:
        dsr = get_object_or_404(_own_requests(request.auth), reference=reference.upper())
        return Response(RequestSerializer(dsr).data)


class RequestCancelView(APIView):
    required_scopes = {"POST": WRITE}

    @extend_schema(
        operation_id="requests_cancel",
        request=RequestCancelSerializer,
        responses={200: RequestSerializer, **PROBLEMS},
        description="Withdraw the request, under the same rules as the subject's own withdrawal (409 when too late).",
    )
    def post(self, request: Request, reference: str) -> Response:
        serializer = RequestCancelSerializer(data=request.data if request.data else {})
        serializer.is_valid(raise_exception=True)
        dsr = get_object_or_404(_own_requests(request.auth), reference=reference.upper())
        blocker = withdrawal_blocker(dsr)
        if blocker:
            raise Conflict(blocker)
        request_cancel(request=dsr, actor=actor_for_key(request.auth), reason=serializer.validated_data["reason"])
        dsr.refresh_from_db()
        return Response(RequestSerializer(dsr).data)


class AuditEventsView(APIView):
    required_scopes = {"GET": AUDIT}

    @extend_schema(
        operation_id="audit_events_list",
        parameters=[AuditFilterSerializer],
        responses={200: AuditPageSerializer, **PROBLEMS},
        description="The audit trail in order, with each event's hash and previous hash, to follow and verify "
        "as `manage.py audit verify --file` does.",
    )
    def get(self, request: Request) -> Response:
        filters = AuditFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        after, limit = filters.validated_data["after_sequence"], filters.validated_data["limit"]
        events = list(AuditEvent.objects.filter(sequence__gt=after).order_by("sequence")[: limit + 1])
        page = [event_record(event) for event in events[:limit]]
        return Response(
            {
                "events": page,
                "next_after_sequence": page[-1]["sequence"] if page else after,
                "has_more": len(events) > limit,
            }
        )
