"""Fixtures and helpers for the staff admin tests (imported by tests/unit/test_admin_*.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gdpr_requests.models import AuditEvent, DataSubjectRequest
from gdpr_requests.requests import services

PASSWORD = "correct-horse-battery"


@pytest.fixture
def superuser(db, django_user_model):
    return django_user_model.objects.create_superuser("root", "root@staff.example", PASSWORD)


@pytest.fixture
def plain_user(db, django_user_model):
    """Logged in, but not staff: the admin must not let them in."""
    return django_user_model.objects.create_user("visitor", "visitor@example.org", PASSWORD)


@pytest.fixture
def bare_staff(db, django_user_model):
    """is_staff, but in no group and without permissions."""
    return django_user_model.objects.create_user("bare", "bare@staff.example", PASSWORD, is_staff=True)


@pytest.fixture
def other_staff(db, django_user_model):
    user = django_user_model.objects.create_user("bob", "bob@staff.example", PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="Privacy staff"))
    return user


@pytest.fixture
def users(db, staff_user, auditor_user, superuser, plain_user, bare_staff):
    return {
        "anonymous": None,
        "plain": plain_user,
        "bare_staff": bare_staff,
        "privacy_staff": staff_user,
        "auditor": auditor_user,
        "superuser": superuser,
    }


@pytest.fixture
def staff_client(staff_user):
    client = Client()  # each role its own client, so that a test can hold several at once
    client.force_login(staff_user)
    return client


@pytest.fixture
def auditor_client(auditor_user):
    client = Client()  # each role its own client, so that a test can hold several at once
    client.force_login(auditor_user)
    return client


@pytest.fixture
def super_client(superuser):
    client = Client()  # each role its own client, so that a test can hold several at once
    client.force_login(superuser)
    return client


@pytest.fixture
def verified_request(make_request, project, staff_actor):
    """A deletion with a distinct id and a verified identity: ready for approval."""
    return make_request(verified_by_staff="called back on the number on file", channel="staff")


def action_url(dsr: DataSubjectRequest, action: str) -> str:
    return reverse("admin:gdpr_requests_datasubjectrequest_action", args=[dsr.pk, action])


def change_url(obj) -> str:
    return reverse(f"admin:gdpr_requests_{obj._meta.model_name}_change", args=[obj.pk])


def changelist_url(model_name: str) -> str:
    return reverse(f"admin:gdpr_requests_{model_name}_changelist")


def snapshot(dsr: DataSubjectRequest) -> tuple:
    """What a forbidden or refused action must leave alone."""
    dsr.refresh_from_db()
    return (
        AuditEvent.objects.count(),
        dsr.status,
        dsr.due_at,
        list(dsr.distinct_ids),
        dsr.assignee_id,
        dsr.notes.count(),
        sorted(dsr.projects.values_list("pk", flat=True)),
        dsr.link_nonce,
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def make_failed(dsr: DataSubjectRequest, actor) -> DataSubjectRequest:
    services.request_approve(request=dsr, actor=actor)
    services.request_start_processing(request=dsr, task_count=1)
    return services.request_fail(request=dsr, why="test: task failed")


def days_ago(days: int):
    return timezone.now() - timedelta(days=days)
