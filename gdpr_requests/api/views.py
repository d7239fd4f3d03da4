"""The API's endpoints. Each one checks its input with a serializer and calls one request service."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.generics import get_object_or_404
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gdpr_requests.api import idempotency
from gdpr_requests.api.errors import Conflict
from gdpr_requests.api.intake import Creation, request_create_via_api
from gdpr_requests.api.keys import actor_for_key
from gdpr_requests.api.serializers import (
    REQUEST_COLUMNS,
    AuditFilterSerializer,
    AuditPageSerializer,
    ProblemSerializer,
    RequestCancelSerializer,
    RequestCreatedSerializer,
    RequestCreateSerializer,
    RequestFilterSerializer,
    RequestPageSerializer,
    RequestSerializer,
)
from gdpr_requests.audit.chain import event_record
from gdpr_requests.models import ApiKey, ApiScope, AuditEvent, DataSubjectRequest
from gdpr_requests.requests.services import request_cancel, withdrawal_blocker

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


def _shown_requests(api_key: ApiKey):
    # Reads load only the columns RequestSerializer shows.
    return _own_requests(api_key).only(*REQUEST_COLUMNS)


_REFERENCE = re.compile(r"DSR-[0-9A-Z]{4}-[0-9A-Z]{4}")


def _reference(value: str) -> str:
    """The reference in the path, upper-cased; anything that cannot be one (a NUL, 5 MB of text) is a 404 before
    it reaches the database."""
    reference = value.strip().upper()
    if not _REFERENCE.fullmatch(reference):
        raise NotFound("No request with this reference.")
    return reference


class RequestPagination(CursorPagination):
    # Ordered by id, which never changes: a page boundary cannot move under concurrent writes, so paging
    # neither skips nor repeats a request.
    ordering = "id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def decode_cursor(self, request: Request) -> Any:
        """DRF's decoding, plus a position that must be an id: a cursor edited by hand is a 404 (DRF's "Invalid
        cursor"), never a database error."""
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            position = str(cursor.position)
            if not position.isascii() or not position.isdigit() or len(position) > 19:
                raise NotFound(self.invalid_cursor_message)
        return cursor


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
        header = request.headers.get(idempotency.HEADER)
        key = idempotency.clean_key(header) if header is not None else None
        serializer = RequestCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        answer = request_create_via_api(
            Creation(
                api_key=request.auth,
                values=serializer.validated_data,
                idempotency_key=key,
                body_hash=idempotency.body_hash(request.data) if key else "",
            )
        )
        headers = {"Location": answer.body["links"]["self"]}
        if answer.replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(answer.body, status=answer.status_code, headers=headers)

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
        queryset = _shown_requests(request.auth)
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
        dsr = get_object_or_404(_shown_requests(request.auth), reference=_reference(reference))
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
        dsr = get_object_or_404(_own_requests(request.auth), reference=_reference(reference))
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
