"""API keys in the admin: make one (the key is shown once, in the confirmation message), see last use, revoke.

Keys are configuration with power over requests, so only superusers see this page (no group has its
permissions)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from gdpr_requests.api.keys import api_key_create, api_key_revoke
from gdpr_requests.audit.chain import Actor
from gdpr_requests.models import ApiKey, ApiScope
from gdpr_requests.requests.services import ServiceError
from gdpr_requests.staff.common import ServiceAddAdmin


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ["name", "scopes"]


class ApiKeyAdmin(ServiceAddAdmin):
    form = ApiKeyForm
    list_display = ["name", "prefix", "scope_list", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "scopes", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return ["name", "scopes"] if obj is None else ["name", *self.readonly_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return [] if obj is None else ["name", *self.readonly_fields]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: requests keep pointing at the key that made them

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            return
        # The form checked the name (unique) and the scopes; a refusal here (the name taken meanwhile) is raised:
        # ServiceAddAdmin rolls the add back and shows it, rather than "added successfully".
        made = api_key_create(
            name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"], actor=Actor.for_user(request.user)
        )
        obj.pk = made.api_key.pk
        self.message_user(
            request, f"API key for {made.api_key.name}: {made.key} (shown this once: store it now).", messages.WARNING
        )

    @admin.action(description="Revoke the selected API keys")
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        done = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            try:
                api_key_revoke(api_key=api_key, actor=Actor.for_user(request.user))
                done += 1
            except ServiceError as exc:
                self.message_user(request, str(exc), messages.ERROR)
        self.message_user(request, f"{done} API key(s) revoked.")


def register(site: admin.AdminSite) -> None:
    """Called from gdpr_requests.staff.register_models."""
    if not site.is_registered(ApiKey):
        site.register(ApiKey, ApiKeyAdmin)
