"""Reading one Mixpanel cohort sync message: the body's shape, checked before anything is stored.

The payload and the answers are Mixpanel's (docs/cohorts.md, "Request payload" and "Expected response"):
``{"action", "parameters": {"mixpanel_project_id", "mixpanel_cohort_id", "mixpanel_session_id",
"page_info": {"total_pages", "page_count"}, "members": [{"email", "mixpanel_distinct_id", "first_name",
"last_name", ...}]}}``. Members may carry extra properties ("Properties to Export"); they are ignored.
Nothing here touches the database, and no error message repeats a member's data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from gdpr_requests.crypto import normalise_email
from gdpr_requests.models import CohortAction
from gdpr_requests.requests.services import MAX_DISTINCT_ID_LENGTH

# "The batch size is set to 1000 users per call" (docs/cohorts.md, "Timing, batching, retries and duplicates").
MAX_MEMBERS = 1000
MAX_SESSION_ID_LENGTH = 200
MAX_NAME_LENGTH = 200
# Control characters (below U+0020), found and removed by the regex engine rather than a loop per character.
_CONTROL = re.compile("[\x00-\x1f]")


class MessageRefused(Exception):
    """The message cannot be taken: answered with Mixpanel's failure shape and ``status``; nothing is stored."""

    def __init__(self, message: str, *, status: int = 400, action: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.action = action


@dataclass(frozen=True)
class Member:
    distinct_id: str
    email: str  # "" when absent or not an address
    name: str


@dataclass(frozen=True)
class CohortMessage:
    action: str
    project_id: str
    cohort_id: str
    session_id: str
    page_count: int
    total_pages: int | None
    members: tuple[Member, ...]


def failure_body(action: str | None, message: str, code: int) -> dict[str, Any]:
    return {"action": action, "status": "failure", "error": {"message": message, "code": code}}


def success_body(action: str) -> dict[str, Any]:
    return {"action": action, "status": "success"}


def _positive_int(value: Any, what: str, action: str) -> int:
    # bool is an int in Python; a JSON true is not a page number.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MessageRefused(f"{what} must be a whole number of 1 or more.", action=action)
    return value


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _member(raw: Any, index: int, action: str) -> Member:
    where = f"members[{index}]"
    if not isinstance(raw, dict):
        raise MessageRefused(f"{where} is not an object.", action=action)
    distinct_id = raw.get("mixpanel_distinct_id")
    if isinstance(distinct_id, int) and not isinstance(distinct_id, bool):
        distinct_id = str(distinct_id)
    if not isinstance(distinct_id, str) or not distinct_id.strip():
        raise MessageRefused(f"{where} has no mixpanel_distinct_id.", action=action)
    distinct_id = distinct_id.strip()
    if len(distinct_id) > MAX_DISTINCT_ID_LENGTH:
        raise MessageRefused(
            f"{where}.mixpanel_distinct_id is longer than {MAX_DISTINCT_ID_LENGTH} characters.", action=action
        )
    if _CONTROL.search(distinct_id):
        raise MessageRefused(f"{where}.mixpanel_distinct_id contains control characters.", action=action)
    # The email is a profile property anyone could have set: kept only when it is an address at all.
    email = normalise_email(_text(raw.get("email")))
    if email:
        try:
            validate_email(email)
        except ValidationError:
            email = ""
    name = " ".join(part for part in (_text(raw.get("first_name")), _text(raw.get("last_name"))) if part)
    name = _CONTROL.sub("", name)[:MAX_NAME_LENGTH]
    return Member(distinct_id=distinct_id, email=email, name=name)


def parse_message(body: bytes) -> CohortMessage:
    """The message in ``body``, or MessageRefused (status 400) saying what is wrong with it."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise MessageRefused("The body is not JSON.") from None
    except RecursionError:  # nesting deeper than the parser's stack, which a 4 MiB body can reach
        raise MessageRefused("The body is nested too deeply.") from None
    if not isinstance(data, dict):
        raise MessageRefused("The body is not a JSON object.")
    action = data.get("action")
    if action not in CohortAction.values:
        raise MessageRefused(f"action must be one of {', '.join(CohortAction.values)}.")
    params = data.get("parameters")
    if not isinstance(params, dict):
        raise MessageRefused("parameters is missing or not an object.", action=action)
    project_id = params.get("mixpanel_project_id")
    if isinstance(project_id, bool) or not isinstance(project_id, int | str) or not str(project_id).strip():
        raise MessageRefused("parameters.mixpanel_project_id is missing.", action=action)
    session_id = params.get("mixpanel_session_id")
    if not isinstance(session_id, str) or not session_id.strip():
        raise MessageRefused("parameters.mixpanel_session_id is missing.", action=action)
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        raise MessageRefused("parameters.mixpanel_session_id is too long.", action=action)
    page_info = params.get("page_info")
    if not isinstance(page_info, dict):
        raise MessageRefused("parameters.page_info is missing or not an object.", action=action)
    page_count = _positive_int(page_info.get("page_count"), "page_info.page_count", action)
    total_pages = page_info.get("total_pages")
    if total_pages is not None:
        total_pages = _positive_int(total_pages, "page_info.total_pages", action)
        if page_count > total_pages:
            raise MessageRefused("page_info.page_count is greater than page_info.total_pages.", action=action)
    members = params.get("members")
    if not isinstance(members, list):
        raise MessageRefused("parameters.members is missing or not a list.", action=action)
    if len(members) > MAX_MEMBERS:
        raise MessageRefused(f"More than {MAX_MEMBERS} members in one message.", action=action)
    cohort_id = params.get("mixpanel_cohort_id")
    return CohortMessage(
        action=action,
        project_id=str(project_id).strip(),
        cohort_id=str(cohort_id)[:64] if isinstance(cohort_id, int | str) and not isinstance(cohort_id, bool) else "",
        session_id=session_id.strip(),
        page_count=page_count,
        total_pages=total_pages,
        members=tuple(_member(raw, index, action) for index, raw in enumerate(members)),
    )
