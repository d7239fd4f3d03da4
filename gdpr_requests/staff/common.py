"""What the staff workspace's admins share: the work permission, declared-filters-only change lists, read-only
admins, small form pages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.filters import FieldListFilter, ListFilter
from django.contrib.admin.utils import get_fields_from_path
from django.db.models import Field
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
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


def declared_filter_parameters(model_admin: admin.ModelAdmin, request: HttpRequest) -> frozenset[str]:
    """The query parameters that ``model_admin``'s declared list filters and date hierarchy read, exactly.

    Each filter is built the way the change list builds it (with no parameters given) and asked for its
    ``expected_parameters()``, so a field filter yields e.g. ``status__exact``/``status__isnull`` and a related
    one ``projects__id__exact``: never a free-text lookup.
    """
    cache: dict[int, frozenset[str]] = request.__dict__.setdefault("_declared_filter_parameters", {})
    if id(model_admin) in cache:
        return cache[id(model_admin)]
    names: set[str] = set()
    if model_admin.date_hierarchy:
        names |= {f"{model_admin.date_hierarchy}__{part}" for part in ("year", "month", "day")}
    model = model_admin.model
    for item in model_admin.get_list_filter(request):
        if isinstance(item, type) and issubclass(item, ListFilter):
            spec = item(request, {}, model, model_admin)
        else:
            field: Any
            filter_class: Any
            field, filter_class = item if isinstance(item, list | tuple) else (item, FieldListFilter.create)
            path = None
            if not isinstance(field, Field):
                path, field = str(field), get_fields_from_path(model, str(field))[-1]
            spec = filter_class(field, request, {}, model, model_admin, field_path=path)
        names.update(str(name) for name in spec.expected_parameters() if name)
    cache[id(model_admin)] = frozenset(names)
    return cache[id(model_admin)]


class DeclaredFiltersOnly:
    """A change list that filters only through its declared filters, for every user, superusers included.

    Django's own ``lookup_allowed`` accepts any lookup on the model's own fields from the query string, so
    ``?requester_email__startswith=a`` would let anyone who may view the list (auditors included) read a column,
    letter by letter, that the page never shows. Here a query parameter is accepted only when a declared filter
    (or the date hierarchy) reads it; anything else is refused (Django answers 400).
    PrivacyAdminSite.register puts this in front of every model admin, contrib apps' included.
    """

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        if request is None:
            return False  # nothing to build the filters with: refuse rather than guess
        return lookup in declared_filter_parameters(self, request)  # type: ignore[arg-type]


def with_declared_filters_only(admin_class: type[admin.ModelAdmin]) -> type[admin.ModelAdmin]:
    """``admin_class`` itself when it already refuses undeclared lookups, else a subclass that does."""
    if issubclass(admin_class, DeclaredFiltersOnly):
        return admin_class
    return type(admin_class.__name__, (DeclaredFiltersOnly, admin_class), {"__module__": admin_class.__module__})


# How people write these names (Django derives "Api calls" and "mixpanel project" from the class names); used for
# the index, the change lists' and the object pages' titles, without touching the models' migration state.
DISPLAY_NAMES = {
    "apicall": ("API call", "API calls"),
    "mixpanelproject": ("Mixpanel project", "Mixpanel projects"),
    "mixpaneltask": ("Mixpanel task", "Mixpanel tasks"),
}


def display_names(opts: Any) -> tuple[str, str]:
    return DISPLAY_NAMES.get(opts.model_name, (str(opts.verbose_name), str(opts.verbose_name_plural)))


class StaffModelAdmin(DeclaredFiltersOnly, admin.ModelAdmin):
    """The base of the staff workspace's model admins."""

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        if self.model._meta.model_name in DISPLAY_NAMES:
            extra_context = {"title": display_names(self.model._meta)[1], **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> Any:
        if self.model._meta.model_name in DISPLAY_NAMES:
            singular = display_names(self.model._meta)[0]
            verb = "Add" if object_id is None else ("Change" if self.has_change_permission(request) else "View")
            extra_context = {"title": f"{verb} {singular}", **(extra_context or {})}
        return super().changeform_view(request, object_id, form_url, extra_context)


class ReadOnlyAdmin(StaffModelAdmin):
    """Records that nobody edits through the admin, superusers included: they are written by services only."""

    actions = None

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ServiceAddAdmin(admin.ModelAdmin):
    """An admin whose ``save_model`` creates the object through a service that may refuse.

    The form's ``clean()`` runs the service's own checks, so what can be refused is a form error. What only the
    save can see (a name taken or a host's address changed since the form was checked) is raised from
    ``save_model``: it leaves the add view's transaction, so nothing is saved, no LogEntry is written, and the
    page does not say "added successfully"; the add page comes back with the refusal instead.
    """

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().add_view(request, form_url, extra_context)
        except REFUSALS as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


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
