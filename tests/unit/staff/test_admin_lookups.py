"""The query string of a change list filters only through the filters the list declares (issue 12 #2).

Django's stock ``lookup_allowed`` lets anyone who may view a list filter it by any lookup on the model's own
fields, so ``?requester_email__startswith=a`` read requesters' emails letter by letter, auditors included.
These tests walk every field of every model that has an admin on the site (and one hop along each relation),
with the lookups one would try, for every staff role, and require a refusal for all that no filter declares.
"""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.contrib import admin
from django.contrib.admin.filters import SimpleListFilter
from django.test import RequestFactory
from django.urls import reverse

from gdpr_requests.models import DataSubjectRequest, MixpanelTask
from tests.unit.staff.admin_support import superuser  # noqa: F401

pytestmark = pytest.mark.django_db

LOOKUPS = ["", "exact", "iexact", "startswith", "istartswith", "contains", "icontains", "regex", "gt", "lt", "in"]
LOOKUPS += ["isnull", "gte", "lte", "endswith", "year", "id", "id__exact"]
ROLES = ["superuser", "privacy_staff", "auditor"]


def _admins() -> list[admin.ModelAdmin]:
    return sorted(admin.site._registry.values(), key=lambda model_admin: model_admin.model._meta.label)


def _field_paths(model) -> list[str]:
    """Every field of ``model`` (reverse relations too) and every concrete field one relation away."""
    paths = []
    for field in model._meta.get_fields():
        name = field.name  # for a reverse relation, the name a query uses
        paths.append(name)
        if field.is_relation and field.related_model is not None:
            paths.extend(f"{name}__{other.name}" for other in field.related_model._meta.concrete_fields)
    return paths


def _declared_by_name(model_admin: admin.ModelAdmin) -> set[str]:
    """What the list's declared filters read, spelled out independently of the code under test: a field filter
    reads ``<field>`` or ``<field>__exact`` and ``__isnull`` (dates ``__gte``/``__lt``, relations ``__id__exact``),
    a simple filter its own parameter, a date hierarchy ``<field>__year``/``__month``/``__day``."""
    declared: set[str] = set()
    if model_admin.date_hierarchy:
        declared |= {f"{model_admin.date_hierarchy}__{part}" for part in ("year", "month", "day")}
    for item in model_admin.list_filter:
        if isinstance(item, type):
            declared.add(str(item.parameter_name) if issubclass(item, SimpleListFilter) else "")
            continue
        field = str(item[0] if isinstance(item, list | tuple) else item)
        declared |= {field, *(f"{field}__{suffix}" for suffix in ("exact", "isnull", "gte", "lt", "id__exact"))}
    return declared


def _probes(model_admin: admin.ModelAdmin) -> list[str]:
    declared = _declared_by_name(model_admin)
    probes = []
    for path in _field_paths(model_admin.model):
        for lookup in LOOKUPS:
            param = f"{path}__{lookup}" if lookup else path
            if param not in declared:
                probes.append(param)
    return probes


@pytest.fixture(autouse=True)
def _quiet_refusals():
    """Each refusal is logged as a security error with its traceback: hundreds of them are noise here."""
    logger = logging.getLogger("django.security.DisallowedModelAdminLookup")
    saved = logger.disabled
    logger.disabled = True
    yield
    logger.disabled = saved


@pytest.fixture
def role_users(staff_user, auditor_user, superuser):
    return {"superuser": superuser, "privacy_staff": staff_user, "auditor": auditor_user}


@pytest.fixture
def rows(make_request, project):
    """Rows whose personal data differ in their first letter, so that a filter that worked would show it."""
    first = make_request(email="alice@example.org", name="Alice", distinct_ids=["a-1"])
    second = make_request(email="bob@example.org", name="Bob", distinct_ids=["b-1"])
    task = MixpanelTask.objects.create(project=project, kind="deletion", compliance_type="GDPR", distinct_ids=["a-1"])
    task.requests.add(first)
    return first, second


def test_every_admin_on_the_site_refuses_undeclared_lookups(role_users, rows):
    checked = 0
    for model_admin in _admins():
        for role in ROLES:
            request = RequestFactory().get("/admin/")
            request.user = role_users[role]
            for param in _probes(model_admin):
                assert not model_admin.lookup_allowed(param, "a", request), (model_admin, role, param)
                checked += 1
    assert checked > 1000


@pytest.mark.parametrize("role", ROLES)
def test_the_change_lists_answer_undeclared_lookups_with_a_refusal_not_filtered_rows(client, role_users, rows, role):
    client.force_login(role_users[role])
    for model_admin in _admins():
        url = reverse(f"admin:{model_admin.opts.app_label}_{model_admin.opts.model_name}_changelist")
        # Every field once over HTTP (each with the next lookup in turn); the full grid is checked above.
        declared = _declared_by_name(model_admin)
        for index, path in enumerate(_field_paths(model_admin.model)):
            candidates = [f"{path}__{lookup}" for lookup in LOOKUPS[1:]]
            query = next(c for c in candidates[index % len(candidates) :] + candidates if c not in declared)
            response = client.get(url, {query: "a"})
            assert response.status_code in (400, 403), (role, url, query, response.status_code)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("model", "param", "value"),
    [
        (DataSubjectRequest, "requester_email__startswith", "a"),
        (DataSubjectRequest, "requester_name__startswith", "A"),
        (DataSubjectRequest, "distinct_ids__icontains", "a-"),
        (DataSubjectRequest, "email_hash__startswith", "0"),
        (DataSubjectRequest, "message__icontains", "a"),
        (DataSubjectRequest, "notes__text__icontains", "a"),
        (MixpanelTask, "distinct_ids__icontains", "a-"),
        (MixpanelTask, "requests__requester_email__startswith", "a"),
        (MixpanelTask, "requests__requester_name__istartswith", "a"),
    ],
)
def test_the_reported_probes_are_refused(client, role_users, rows, role, model, param, value):
    client.force_login(role_users[role])
    url = reverse(f"admin:gdpr_requests_{model._meta.model_name}_changelist")
    response = client.get(url, {param: value, "open": "all"})
    assert response.status_code in (400, 403)
    assert b"alice" not in response.content.lower()


def test_every_declared_filter_still_filters(client, superuser, rows):
    """Each choice that a list's filters offer (followed as a person would, by its link) still answers 200."""
    client.force_login(superuser)
    followed = 0
    for model_admin in _admins():
        url = reverse(f"admin:{model_admin.opts.app_label}_{model_admin.opts.model_name}_changelist")
        response = client.get(url)
        assert response.status_code == 200, url
        for spec in response.context["cl"].filter_specs:
            for choice in spec.choices(response.context["cl"]):
                if "query_string" not in choice:
                    continue
                query = dict(parse_qsl(urlsplit(choice["query_string"]).query))
                assert client.get(url, query).status_code == 200, (url, query)
                followed += 1
    assert followed > 20
