"""Building cohort intakes and Mixpanel cohort sync messages for the tests (the payload as docs/cohorts.md shows)."""

from __future__ import annotations

import base64
import json
from typing import Any

from gdpr_requests.audit.chain import Actor
from gdpr_requests.cohorts import services


def make_intake(project, **overrides):
    values = {
        "name": "Requested deletion",
        "project": project,
        "kind": "deletion",
        "regulation": "gdpr",
        "actor": Actor.system("test"),
    }
    values.update(overrides)
    return services.cohort_intake_create(**values)


def member(number: int, **extra: Any) -> dict[str, Any]:
    values = {
        "email": f"user{number}@example.org",
        "mixpanel_distinct_id": f"distinct-{number}",
        "first_name": "User",
        "last_name": f"Number {number}",
    }
    values.update(extra)
    return values


def payload(
    members: list[dict[str, Any]],
    *,
    action: str = "add_members",
    project_id: Any = "12345",
    session: str = "session-1",
    page: int = 1,
    pages: int = 1,
) -> dict[str, Any]:
    return {
        "action": action,
        "parameters": {
            "mixpanel_project_id": project_id,
            "mixpanel_cohort_id": "98765",
            "mixpanel_cohort_name": "Requested account deletion",
            "mixpanel_cohort_description": "Pressed 'delete my account'",
            "mixpanel_session_id": session,
            "page_info": {"total_pages": pages, "page_count": page},
            "members": members,
        },
    }


def auth_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def post(client, intake, password: str, body: Any, *, username: str | None = None, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body).encode()
    return client.post(
        services.WEBHOOK_PATH.format(public_id=intake.public_id),
        data=data,
        content_type="application/json",
        HTTP_AUTHORIZATION=auth_header(username if username is not None else intake.username, password),
    )
