"""What the API accepts and answers. Input is checked here field by field (so errors name the field); the rules
themselves stay in the request services, which the views call."""

from __future__ import annotations

import copy
from typing import Any

from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers

from gdpr_requests.models import (
    Channel,
    DataSubjectRequest,
    DisclosureType,
    MixpanelProject,
    Regulation,
    RequestKind,
)
from gdpr_requests.requests import states
from gdpr_requests.requests.services import MAX_DISTINCT_ID_LENGTH, MAX_DISTINCT_IDS, ServiceError, clean_distinct_ids

MAX_PROJECTS = 50


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, naming them: a misspelt optional field must not be silently ignored."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(name) for name in data if name not in self.fields)
            if unknown:
                raise serializers.ValidationError({name[:100]: ["Unknown field."] for name in unknown[:20]})
        return super().to_internal_value(data)


class RequestCreateSerializer(StrictSerializer):
    kind = serializers.ChoiceField(choices=RequestKind.choices)
    regulation = serializers.ChoiceField(choices=Regulation.choices)
    email = serializers.EmailField(max_length=254)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    distinct_ids = serializers.ListField(
        child=serializers.CharField(max_length=MAX_DISTINCT_ID_LENGTH),
        max_length=MAX_DISTINCT_IDS,
        required=False,
        default=list,
        help_text="The subject's Mixpanel distinct ids (needed before approval).",
    )
    projects = serializers.ListField(
        child=serializers.CharField(max_length=200),
        min_length=1,
        max_length=MAX_PROJECTS,
        required=False,
        help_text="Names of the Mixpanel projects concerned; every active project when left out.",
    )
    received_at = serializers.DateTimeField(required=False, help_text="When the request was received (default: now).")
    disclosure_type = serializers.ChoiceField(
        choices=DisclosureType.choices, required=False, allow_blank=True, default=""
    )
    external_id = serializers.CharField(
        max_length=100, required=False, help_text="Your own id for the request: unique per API key."
    )
    identity_verified_by = serializers.CharField(
        max_length=2000,
        required=False,
        allow_blank=True,
        default="",
        help_text="How you checked the subject's identity: the request then starts verified. "
        "Without it the subject is asked to confirm by email.",
    )

    def validate_distinct_ids(self, value: list[str]) -> list[str]:
        try:
            return clean_distinct_ids(value)
        except ServiceError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_received_at(self, value: Any) -> Any:
        if value > timezone.now():
            raise serializers.ValidationError("The received date is in the future.")
        return value

    def validate_projects(self, names: list[str]) -> list[MixpanelProject]:
        wanted = {name.strip().lower(): name for name in names}
        found = {p.name.lower(): p for p in MixpanelProject.objects.filter(is_active=True)}
        unknown = [name for key, name in wanted.items() if key not in found]
        if unknown:
            raise serializers.ValidationError(f"No active Mixpanel project named {unknown[0][:100]!r}.")
        return [found[key] for key in wanted]


class RequestCancelSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class RequestLinksSerializer(serializers.Serializer):
    self = serializers.CharField()
    cancel = serializers.CharField()


def request_links(dsr: DataSubjectRequest) -> dict[str, str]:
    return {
        "self": reverse("api:request-detail", args=[dsr.reference]),
        "cancel": reverse("api:request-cancel", args=[dsr.reference]),
    }


class RequestCreatedSerializer(serializers.Serializer):
    reference = serializers.CharField()
    status = serializers.ChoiceField(choices=states.STATUS_CHOICES)
    due_at = serializers.DateField()
    links = RequestLinksSerializer()


# Declared field by field rather than as a ModelSerializer, which rebuilt its fields from the model on every use;
# to_representation formats each value with a copy of its declared field made once per process instead of the
# deep copies DRF binds to every instance: the same JSON (a test holds it to DRF's own path) for a fraction of
# the CPU of a read. (The docstring is the schema's description.)
class RequestSerializer(serializers.Serializer):
    """A request as the API shows it: references, statuses and dates, no personal data."""

    reference = serializers.CharField(read_only=True)
    external_id = serializers.CharField(allow_null=True, read_only=True)
    kind = serializers.ChoiceField(choices=RequestKind.choices, read_only=True)
    regulation = serializers.ChoiceField(choices=Regulation.choices, read_only=True)
    status = serializers.ChoiceField(choices=states.STATUS_CHOICES, read_only=True)
    channel = serializers.ChoiceField(choices=Channel.choices, read_only=True)
    received_at = serializers.DateTimeField(read_only=True)
    verified_at = serializers.DateTimeField(allow_null=True, read_only=True)
    closed_at = serializers.DateTimeField(allow_null=True, read_only=True)
    original_due_at = serializers.DateField(read_only=True)
    due_at = serializers.DateField(read_only=True)
    extended_at = serializers.DateTimeField(allow_null=True, read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    links = serializers.SerializerMethodField()

    def get_links(self, dsr: DataSubjectRequest) -> RequestLinksSerializer:
        return request_links(dsr)  # type: ignore[return-value]

    def to_representation(self, instance: DataSubjectRequest) -> dict[str, Any]:
        shown: dict[str, Any] = {}
        for name, field in _REQUEST_FORMATS:
            value = getattr(instance, name)
            shown[name] = None if value is None else field.to_representation(value)
        shown["links"] = request_links(instance)
        return shown


# The formatting fields of RequestSerializer.to_representation, and the columns a read of a request needs.
_REQUEST_FORMATS = [
    (name, copy.deepcopy(field)) for name, field in RequestSerializer._declared_fields.items() if name != "links"
]
REQUEST_COLUMNS = ("id", *(name for name, _field in _REQUEST_FORMATS))


class RequestPageSerializer(serializers.Serializer):
    next = serializers.CharField(allow_null=True, help_text="The next page's URL (a cursor), or null.")
    previous = serializers.CharField(allow_null=True)
    results = RequestSerializer(many=True)


class RequestFilterSerializer(StrictSerializer):
    status = serializers.ChoiceField(choices=states.STATUS_CHOICES, required=False)
    kind = serializers.ChoiceField(choices=RequestKind.choices, required=False)
    updated_since = serializers.DateTimeField(required=False)
    external_id = serializers.CharField(max_length=100, required=False)
    cursor = serializers.CharField(max_length=1000, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=200, required=False)


class AuditEventSerializer(serializers.Serializer):
    sequence = serializers.IntegerField()
    occurred_at = serializers.CharField()
    actor_type = serializers.CharField()
    actor_id = serializers.CharField()
    actor_label = serializers.CharField()
    action = serializers.CharField()
    request_reference = serializers.CharField()
    payload = serializers.DictField()
    prev_hash = serializers.CharField()
    hash = serializers.CharField()


class AuditPageSerializer(serializers.Serializer):
    events = AuditEventSerializer(many=True)
    next_after_sequence = serializers.IntegerField(help_text="Pass as after_sequence to read on.")
    has_more = serializers.BooleanField()


class AuditFilterSerializer(StrictSerializer):
    after_sequence = serializers.IntegerField(min_value=0, required=False, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=1000, required=False, default=100)


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    errors = serializers.ListField(child=serializers.DictField(child=serializers.CharField()), required=False)
