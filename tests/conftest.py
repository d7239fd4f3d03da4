"""Shared fixtures. Unit tests need nothing but the database; integration tests need real services and say so.

When CI is set (the CI script), a test that needs PostgreSQL or Redis fails if the service is missing; on a
laptop without them it is skipped with the reason.
"""

from __future__ import annotations

import os
from datetime import date

import pytest

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls in tests that also drive a browser
# Messages that tests queue (after-commit hooks) must not land in the development broker under var/, where a
# `make run` worker would pick them up. Tests that run real workers point Celery at their own Redis.
os.environ.setdefault("CELERY_BROKER_URL", "memory://")

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def need(condition: bool, reason: str) -> None:
    """Skip a test whose service is missing, except in CI, where that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI requires this service: {reason}")
    pytest.skip(reason)


@pytest.fixture
def require_postgres(settings) -> None:
    need(
        settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql",
        "needs PostgreSQL (set DATABASE_URL=postgres://...)",
    )


@pytest.fixture
def require_redis(settings) -> str:
    url = settings.REDIS_URL
    need(bool(url), "needs Redis (set REDIS_URL=redis://127.0.0.1:6379/0)")
    import redis

    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError as exc:
        need(False, f"Redis at REDIS_URL is not answering: {exc}")
    return url


@pytest.fixture(autouse=True)
def _isolated_environment(settings, tmp_path):
    """Each test writes mail and exports into its own folder, and starts with an empty cache."""
    from django.core.cache import cache

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    # Strong hashing costs ~1 s per user created; tests need logins, not resistance to cracking.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EXPORTS_DIR = tmp_path / "exports"
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def system_actor():
    from gdpr_requests.audit.chain import Actor

    return Actor.system()


def ensure_roles() -> None:
    """The groups migration 0003 makes. A transactional test (live_server) ends with a flush that empties every
    table, data migrations' rows included, so a later test may find them gone: make them again, the same way."""
    from importlib import import_module

    from django.contrib.auth.models import Group, Permission

    if Group.objects.filter(name__in=["Privacy staff", "Auditors"]).count() == 2:
        return
    roles = import_module("gdpr_requests.migrations.0003_roles")

    def perms(codenames):
        return Permission.objects.filter(content_type__app_label="gdpr_requests", codename__in=codenames)

    staff, _ = Group.objects.get_or_create(name="Privacy staff")
    codenames = [f"{action}_{model}" for action, models in roles.STAFF.items() if action != "work" for model in models]
    staff.permissions.set(perms([*codenames, "work_request"]))
    auditors, _ = Group.objects.get_or_create(name="Auditors")
    auditors.permissions.set(perms([f"view_{model}" for model in roles.MODELS]))


@pytest.fixture
def staff_user(db, django_user_model):
    from django.contrib.auth.models import Group

    ensure_roles()
    user = django_user_model.objects.create_user("alice", "alice@staff.example", "correct-horse-battery", is_staff=True)
    user.groups.add(Group.objects.get(name="Privacy staff"))
    return user


@pytest.fixture
def auditor_user(db, django_user_model):
    from django.contrib.auth.models import Group

    ensure_roles()
    user = django_user_model.objects.create_user("aud", "aud@staff.example", "correct-horse-battery", is_staff=True)
    user.groups.add(Group.objects.get(name="Auditors"))
    return user


@pytest.fixture
def staff_actor(staff_user):
    from gdpr_requests.audit.chain import Actor

    return Actor.staff(staff_user)


@pytest.fixture
def project(db):
    from gdpr_requests.models import MixpanelProject

    return MixpanelProject.objects.create(
        name="Main app",
        mixpanel_project_id="12345",
        project_token="projtoken123",
        oauth_token="oauth-secret-value",
        token_expires_on=date(2027, 6, 1),
        base_url_override="http://127.0.0.1:9/api/app",
    )


@pytest.fixture
def make_request(db, system_actor):
    """Build a request through the intake service (the only way rows are made)."""
    from gdpr_requests.requests import services

    def make(**overrides):
        values = {
            "kind": "deletion",
            "regulation": "gdpr",
            "email": "person@example.org",
            "name": "Pat Person",
            "distinct_ids": ["user-1"],
            "actor": system_actor,
        }
        values.update(overrides)
        return services.request_create(**values)

    return make


@pytest.fixture
def celery_eager():
    """Run Celery tasks inline, in the test's process and database, for the duration of a test."""
    from compliance.celery import app

    saved = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved
