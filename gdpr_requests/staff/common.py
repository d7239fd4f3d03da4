"""What the staff workspace's admins share: the work permission, read-only admins, small form pages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse

from gdpr_requests.requests.services import ServiceError
from gdpr_requests.requests.states import TransitionNotAllowed

WORK_PERMISSION = "gdpr_requests.work_request"
# What a service may refuse with: both carry a message fit to show staff.
REFUSALS = (ServiceError, TransitionNotAllowed)
ACTION_FORM_TEMPLATE = "admin/gdpr_requests/action_form.html"


def can_work(request: HttpRequest) -> bool:
    """Privacy staff and superusers may act; auditors and everyone else only look."""
    user = request.user
    return bool(user.is_active and user.is_staff and user.has_perm(WORK_PERMISSION))


def admin_url(obj: Any, view: str = "change") -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=[obj.pk])


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records that nobody edits through the admin, superusers included: they are written by services only."""

    actions = None

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def render_form_page(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    title: str,
    form: Any = None,
    obj: Any = None,
    template: str = ACTION_FORM_TEMPLATE,
    context: dict[str, Any] | None = None,
    status: int = 200,
) -> TemplateResponse:
    """A small admin page in the admin's own look: breadcrumbs, messages, one form."""
    opts = model_admin.model._meta
    page = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "app_label": opts.app_label,
        "title": title,
        "original": obj,
        "form": form,
        "media": model_admin.media + (form.media if form is not None else forms.Media()),
        "has_view_permission": model_admin.has_view_permission(request, obj),
        **(context or {}),
    }
    return TemplateResponse(request, template, page, status=status)
