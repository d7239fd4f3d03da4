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

from gdpr_requests.models import CohortAction
from gdpr_requests.requests.services import MAX_DISTINCT_ID_LENGTH

# "The batch size is set to 1000 users per call" (docs/cohorts.md, "Timing, batching, retries and duplicates").
MAX_MEMBERS = 1000
MAX_SESSION_ID_LENGTH = 200
MAX_NAME_LENGTH = 200
MAX_COHORT_ID_LENGTH = 64  # the sync row's column; a longer id is kept cut (Mixpanel's are numbers)
# Page numbers are stored in PositiveIntegerField columns: a 32-bit signed integer on PostgreSQL.
MAX_PAGE_NUMBER = 2**31 - 1
# Control characters (C0, DEL and C1: Unicode category Cc), found by the regex engine, not a loop per character;
# _UNTEXT adds lone surrogates (what free text drops).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_UNTEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


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
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PAGE_NUMBER:
        raise MessageRefused(f"{what} must be a whole number from 1 to {MAX_PAGE_NUMBER}.", action=action)
    return value


def _is_utf8(value: str) -> bool:
    # JSON can carry a lone surrogate ("\ud800"): a Python str, but no text that can be hashed, stored or sent.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _has_control(value: str) -> bool:
    # C0, DEL and C1. PostgreSQL refuses a NUL in text outright (DataError); the others are no part of an id.
    return _CONTROL.search(value) is not None


def _identifier(value: str, field: str, action: str | None) -> str:
    """``value`` stripped, or MessageRefused naming ``field`` (never repeating the value) if it is no id."""
    if not _is_utf8(value):
        raise MessageRefused(f"{field} is not valid UTF-8 text.", action=action)
    if _has_control(value):
        raise MessageRefused(f"{field} contains control characters.", action=action)
    return value.strip()


def _text(value: Any) -> str:
    """A free-text property (a name): what is not text is dropped, character by character; never refused."""
    if not isinstance(value, str):
        return ""
    return _UNTEXT.sub("", value).strip()


def _email(value: Any) -> str:
    """The member's address, or "" when it is none (anyone can set the property: it never refuses a message)."""
    if not isinstance(value, str):
        return ""
    email = value.strip()
    # Django's validator takes "\x01" inside a quoted local part and any \w (lone surrogates too) in a domain.
    if not email or not _is_utf8(email) or _has_control(email):
        return ""
    try:
        validate_email(email)
    except ValidationError:
        return ""
    return email  # as Mixpanel holds it (the request keeps it as typed)


def _member(raw: Any, index: int, action: str) -> Member:
    where = f"members[{index}]"
    if not isinstance(raw, dict):
        raise MessageRefused(f"{where} is not an object.", action=action)
    distinct_id = raw.get("mixpanel_distinct_id")
    if isinstance(distinct_id, int) and not isinstance(distinct_id, bool):
        distinct_id = str(distinct_id)
    if not isinstance(distinct_id, str) or not distinct_id.strip():
        raise MessageRefused(f"{where} has no mixpanel_distinct_id.", action=action)
    distinct_id = _identifier(distinct_id, f"{where}.mixpanel_distinct_id", action)
    if len(distinct_id) > MAX_DISTINCT_ID_LENGTH:
        raise MessageRefused(
            f"{where}.mixpanel_distinct_id is longer than {MAX_DISTINCT_ID_LENGTH} characters.", action=action
        )
    name = " ".join(part for part in (_text(raw.get("first_name")), _text(raw.get("last_name"))) if part)
    return Member(distinct_id=distinct_id, email=_email(raw.get("email")), name=name[:MAX_NAME_LENGTH])


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
    project_id = _identifier(str(project_id), "parameters.mixpanel_project_id", action)
    session_id = params.get("mixpanel_session_id")
    if not isinstance(session_id, str) or not session_id.strip():
        raise MessageRefused("parameters.mixpanel_session_id is missing.", action=action)
    session_id = _identifier(session_id, "parameters.mixpanel_session_id", action)
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        raise MessageRefused("parameters.mixpanel_session_id is too long.", action=action)
    cohort_id = params.get("mixpanel_cohort_id")
    if isinstance(cohort_id, int | str) and not isinstance(cohort_id, bool):
        cohort_id = _identifier(str(cohort_id), "parameters.mixpanel_cohort_id", action)[:MAX_COHORT_ID_LENGTH]
    else:
        cohort_id = ""
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
    return CohortMessage(
        action=action,
        project_id=project_id,
        cohort_id=cohort_id,
        session_id=session_id,
        page_count=page_count,
        total_pages=total_pages,
        members=tuple(_member(raw, index, action) for index, raw in enumerate(members)),
    )
