"""Oversized request bodies are refused before anything reads them; ordinary posts, the admin's too, pass."""

from __future__ import annotations

import io
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.urls import reverse

from gdpr_requests.models import DataSubjectRequest

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024


class UnreadableBody(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    def __init__(self) -> None:
        self.reads = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        raise AssertionError("the oversized body was read")

    readline = read


def post_declaring(client: Client, path: str, length: int) -> tuple[object, UnreadableBody]:
    body = UnreadableBody()
    extra: dict = {"CONTENT_LENGTH": str(length), "wsgi.input": body}
    response = client.generic("POST", path, content_type="multipart/form-data; boundary=xyz", **extra)
    return response, body


@pytest.mark.parametrize("path", ["/request/", "/link/", "/admin/login/", "/verify/anything/"])
def test_a_300_mib_upload_gets_a_413_before_csrf_or_parsing(path):
    response, body = post_declaring(Client(enforce_csrf_checks=True), path, 300 * MIB)
    assert response.status_code == 413
    assert body.reads == 0
    assert "Too much data" in response.content.decode()
    assert response["Connection"] == "close"
    assert not DataSubjectRequest.objects.exists()


def test_the_limit_is_a_setting_and_a_body_at_the_limit_passes(settings):
    settings.DSR_MAX_BODY_BYTES = 2000
    data = {"kind": "access", "name": "Ana", "email": "ana@example.org", "residence": "eea_uk"}
    assert Client().post(reverse("portal:request"), data).status_code == 302
    assert Client().post(reverse("portal:request"), {**data, "message": "m" * 2000}).status_code == 413


def test_a_content_length_that_is_not_a_number_is_a_clear_400():
    response = Client().generic("POST", "/request/", b"", CONTENT_LENGTH="lots")
    assert response.status_code == 400


def test_the_default_limit_is_64_kib_and_django_keeps_accepted_bodies_in_memory(settings):
    from compliance import settings as project_settings

    assert project_settings.DSR_MAX_BODY_BYTES == 64 * 1024
    assert project_settings.DATA_UPLOAD_MAX_MEMORY_SIZE == project_settings.DSR_MAX_BODY_BYTES
    assert project_settings.FILE_UPLOAD_MAX_MEMORY_SIZE == project_settings.DSR_MAX_BODY_BYTES
    middleware = project_settings.MIDDLEWARE
    assert middleware.index("gdpr_requests.portal.middleware.MaxBodySizeMiddleware") == 1
    assert middleware[0] == "gdpr_requests.ops.middleware.ProbeMiddleware"


def test_the_admin_still_signs_in_and_runs_an_action_on_many_rows(client, staff_user, make_request):
    response = client.post(
        reverse("admin:login"), {"username": "alice", "password": "correct-horse-battery", "next": "/admin/"}
    )
    assert response.status_code == 302 and response["Location"] == "/admin/"
    dsr = make_request()
    # A browser posts the change list form url-encoded; 500 ids (five full pages) are ~12 KB.
    selected = [str(dsr.pk)] + [str(n) for n in range(10_000, 10_500)]
    body = urlencode({"action": "assign_selected", "_selected_action": selected}, doseq=True)
    response = client.post(
        reverse("admin:gdpr_requests_datasubjectrequest_changelist"),
        body,
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code in {200, 302}
