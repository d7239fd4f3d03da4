"""Webhooks in the admin: endpoints (the secret shown once, on adding or rotating), deliveries with their
attempts, and "send again". Superusers only, like API keys (no group has these permissions)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from gdpr_requests.audit.chain import Actor
from gdpr_requests.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from gdpr_requests.models.webhooks import WEBHOOK_EVENTS
from gdpr_requests.requests.services import ServiceError
from gdpr_requests.staff.common import ServiceAddAdmin
from gdpr_requests.webhooks.services import (
    check_endpoint_events,
    check_endpoint_url,
    delivery_resend,
    endpoint_create,
    endpoint_disable,
    endpoint_rotate_secret,
)


class WebhookEndpointForm(forms.ModelForm):
    """The add form: the service's URL and event checks run here, so a refused URL is a form error."""

    # A URL typed without a scheme gets https, the only one production accepts.
    url = forms.URLField(label="URL", max_length=2000, assume_scheme="https")
    events = forms.MultipleChoiceField(choices=[(e, e) for e in WEBHOOK_EVENTS], widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "events"]

    def clean_url(self) -> str:
        try:
            url, _host = check_endpoint_url(self.cleaned_data["url"])
        except ServiceError as exc:
            raise forms.ValidationError(str(exc)) from None
        return url

    def clean_events(self) -> list[str]:
        try:
            return check_endpoint_events(self.cleaned_data["events"])
        except ServiceError as exc:
            raise forms.ValidationError(str(exc)) from None


class WebhookEndpointAdmin(ServiceAddAdmin):
    form = WebhookEndpointForm
    list_display = ["id", "url", "event_list", "is_active", "created_at", "secret_rotated_at"]
    list_filter = ["is_active"]
    actions = ["disable", "rotate_secret"]

    @admin.display(description="events")
    def event_list(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.events)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else ["url", "events", "is_active", "created_at", "disabled_at", "secret_rotated_at"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["url", "events"] if obj is None else self.get_readonly_fields(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # disable instead: the delivery log stays

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form: Any, change: bool) -> None:
        if change:
            return
        # A refusal here (the host's address changed since the form checked it) is raised: ServiceAddAdmin
        # rolls the add back and shows it.
        endpoint = endpoint_create(
            url=form.cleaned_data["url"], events=form.cleaned_data["events"], actor=Actor.for_user(request.user)
        )
        obj.pk = endpoint.pk
        self.message_user(request, f"Signing secret (shown this once): {endpoint.secret}", messages.WARNING)

    @admin.action(description="Disable the selected endpoints")
    def disable(self, request: HttpRequest, queryset: Any) -> None:
        done = 0
        for endpoint in queryset.filter(is_active=True):
            endpoint_disable(endpoint=endpoint, actor=Actor.for_user(request.user))
            done += 1
        self.message_user(request, f"{done} endpoint(s) disabled.")

    @admin.action(description="Rotate the signing secret (shown once)")
    def rotate_secret(self, request: HttpRequest, queryset: Any) -> None:
        for endpoint in queryset:
            endpoint = endpoint_rotate_secret(endpoint=endpoint, actor=Actor.for_user(request.user))
            self.message_user(request, f"Webhook {endpoint.pk}: new secret {endpoint.secret}", messages.WARNING)


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ["number", "started_at", "status_code", "duration_ms", "error_class", "outcome"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "event_type",
        "request_reference",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "last_error_class",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["status", "event_type"]
    list_select_related = ["endpoint"]
    search_fields = ["request_reference", "event_id"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    inlines = [WebhookAttemptInline]
    actions = ["send_again"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Send again")
    def send_again(self, request: HttpRequest, queryset: Any) -> None:
        for delivery in queryset:
            delivery_resend(delivery=delivery, actor=Actor.for_user(request.user))
        self.message_user(request, f"{queryset.count()} delivery(ies) queued again.")


def register(site: admin.AdminSite) -> None:
    """Called from gdpr_requests.staff.register_models."""
    for model, model_admin in ((WebhookEndpoint, WebhookEndpointAdmin), (WebhookDelivery, WebhookDeliveryAdmin)):
        if not site.is_registered(model):
            site.register(model, model_admin)
