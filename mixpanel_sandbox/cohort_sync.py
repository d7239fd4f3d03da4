"""Posting a cohort sync as Mixpanel does (docs/cohorts.md): pages of up to 1,000 members, one session id,
``page_count`` from 1, HTTP Basic auth. Used by ``sandbox_cohort_sync``, the tests and benchmarks/cohort.py."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests

PAGE_SIZE = 1000
# A few names from outside ASCII, so the demo exercises what real cohorts hold.
FIRST_NAMES = ("Ana", "Zoë", "Łukasz", "Søren", "Ngọc", "李", "Émile", "Grace")


def sandbox_members(count: int, *, prefix: str = "sandbox-user-", start: int = 1) -> list[dict[str, Any]]:
    """``count`` members as Mixpanel exports them, numbered from ``start`` (the same numbers give the same ids)."""
    return [
        {
            "email": f"{prefix}{n}@example.org",
            "mixpanel_distinct_id": f"{prefix}{n}",
            "first_name": FIRST_NAMES[n % len(FIRST_NAMES)],
            "last_name": f"Tester {n}",
            "phone_number": "+1 555 0100",
        }
        for n in range(start, start + count)
    ]


def build_pages(
    *,
    members: list[dict[str, Any]],
    project_id: str,
    action: str = "add_members",
    cohort_id: str = "1",
    cohort_name: str = "Requested account deletion",
    session_id: str | None = None,
    page_size: int = PAGE_SIZE,
) -> list[dict[str, Any]]:
    """The messages of one export: one session id, ``page_count`` 1..total_pages (one empty page if no members)."""
    session_id = session_id or uuid.uuid4().hex
    chunks = [members[i : i + page_size] for i in range(0, len(members), page_size)] or [[]]
    return [
        {
            "action": action,
            "parameters": {
                "mixpanel_project_id": project_id,
                "mixpanel_cohort_id": cohort_id,
                "mixpanel_cohort_name": cohort_name,
                "mixpanel_cohort_description": "Users who asked for this in the product",
                "mixpanel_session_id": session_id,
                "page_info": {"total_pages": len(chunks), "page_count": number},
                "members": chunk,
            },
        }
        for number, chunk in enumerate(chunks, start=1)
    ]


@dataclass(frozen=True)
class PageResult:
    page: int
    status: int
    body: Any
    seconds: float


def post_pages(
    *, url: str, username: str, password: str, pages: list[dict[str, Any]], timeout: float = 30.0
) -> Iterator[PageResult]:
    """POST each page in order, as Mixpanel's exporter does; stops after a failure (Mixpanel pauses the sync)."""
    with requests.Session() as session:
        session.auth = (username, password)
        for page in pages:
            started = time.perf_counter()
            response = session.post(
                url,
                data=json.dumps(page).encode(),
                headers={"Content-Type": "application/json"},
                timeout=timeout,
            )
            seconds = time.perf_counter() - started
            try:
                body = response.json()
            except ValueError:
                body = response.text[:200]
            yield PageResult(page["parameters"]["page_info"]["page_count"], response.status_code, body, seconds)
            if response.status_code != 200:
                return
