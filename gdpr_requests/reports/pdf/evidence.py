"""The evidence pack as a PDF: the same data as its JSON twin, laid out for reading.

The document is ``SECTIONS`` (at the end), in reading order: each section is a function of the pack that returns
its flowables, so one can be moved, dropped or read without the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, KeepTogether, Paragraph, Spacer

from gdpr_requests.reports.pdf.base import (
    build_document,
    data_table,
    facts_table,
    markup,
    para,
    paragraph_styles,
    register_fonts,
    section_heading,
)
from gdpr_requests.reports.summary import NO_VALUE

Pack = dict[str, Any]
Styles = dict[str, ParagraphStyle]
Section = Callable[[Pack, Styles], list[Flowable]]


def _iso_short(value: str | None) -> str:
    """'2025-03-01T10:20:30+00:00' → '2025-03-01 10:20:30' (the pack keeps full ISO; the PDF is for reading)."""
    if not value:
        return NO_VALUE
    return value.replace("T", " ")[:19]


def _payload_text(payload: dict[str, Any]) -> str:
    return "; ".join(
        f"{key}: {json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value}"
        for key, value in payload.items()
    )


def _by_whom(at: str | None, who: str) -> str:
    return f"{_iso_short(at)} {who}".strip()


def _cover(pack: Pack, s: Styles) -> list[Flowable]:
    """Title, reference and organisation, and the promise that no personal data follows."""
    return [
        para("Evidence pack", s["title"]),
        markup("{reference} · {org}", s["subtitle"], reference=pack["request"]["reference"], org=pack["organisation"]),
        Spacer(1, 3),
        markup(
            "Generated {at} by {who}. Personal data is left out: the requester is identified only by a prefix "
            "of the keyed email hash.",
            s["muted"],
            at=_iso_short(pack["generated_at"]),
            who=pack["generated_by"] or "system",
        ),
        Spacer(1, 6),
    ]


def _request_facts(pack: Pack, s: Styles) -> list[Flowable]:
    req = pack["request"]
    return [
        para("The request", s["h2"]),
        facts_table(
            [
                ("Reference", req["reference"]),
                ("Kind", req["kind"]),
                ("Regulation", req["regulation"].upper()),
                ("CCPA disclosure type", req["disclosure_type"]),
                ("Channel", req["channel"]),
                ("Status", req["status"]),
                ("Email hash (prefix)", req["email_hash_prefix"]),
                ("Distinct ids", f"{req['distinct_id_count']} (not shown)"),
                ("Projects", ", ".join(req["projects"])),
                ("Received", _iso_short(req["received_at"])),
                ("Verified", _by_whom(req["verified_at"], req["verified_by"])),
                ("Approved", _by_whom(req["approved_at"], req["approved_by"])),
                ("Closed", _iso_short(req["closed_at"])),
                ("Due (original)", req["original_due_at"]),
                ("Due (in force)", req["due_at"]),
                ("Extended", _by_whom(req["extended_at"], req["extended_by"]) if req["extended_at"] else "no"),
                ("Extension reason", req["extension_reason"]),
                ("Rejection reason", req["rejection_reason"]),
                ("Closed on time", NO_VALUE if req["closed_on_time"] is None else req["closed_on_time"]),
                (
                    "Personal data purged",
                    _iso_short(req["personal_data_purged_at"]) if req["personal_data_purged_at"] else "no",
                ),
            ],
            s,
            mono={"Email hash (prefix)"},
        ),
        Spacer(1, 4),
    ]


def _chain(pack: Pack, s: Styles) -> list[Flowable]:
    """Where the chain stood when the pack was made, and whether this request's event hashes re-checked."""
    chain = pack["chain"]
    verified = chain["request_events_verified"] and chain["task_events_verified"]
    return [
        para("Chain", s["h2"]),
        facts_table(
            [
                ("Chain head at generation", f"event {chain['head_sequence']}"),
                ("Head hash", chain["head_hash"]),
                ("Events of this request", chain["request_event_count"]),
                ("Events of its Mixpanel tasks", chain["task_event_count"]),
                (
                    "Their hashes re-checked",
                    "all match"
                    if verified
                    else f"MISMATCH at events {', '.join(map(str, chain['unverified_sequences']))}",
                ),
            ],
            s,
            mono={"Head hash"},
        ),
    ]


def _decisions_and_ids(pack: Pack, s: Styles) -> list[Flowable]:
    """Who decided (approvals, a rejection's ground) and how the distinct ids were found (never the ids)."""
    decisions = pack.get("decisions") or {}
    approvals = decisions.get("approvals") or []
    rows: list[tuple[str, Any]] = [
        ("Approvals required", decisions.get("approvals_required", 1)),
        ("Approved by", "; ".join(f"{a['by']} at {_iso_short(a['at'])}" for a in approvals) or NO_VALUE),
    ]
    if decisions.get("rejection_ground"):
        rows.append(("Rejection ground", decisions["rejection_ground"]))
    lookups = pack.get("identity_lookups") or []
    if lookups:
        for lookup in lookups:
            decided = ", ".join(f"{d['count']} {d['state']} by {d['by']}" for d in lookup["decisions"]) or "none yet"
            rows.append(
                (
                    f"Distinct ids: lookup in {lookup['project']}",
                    f"{_iso_short(lookup['looked_up_at'])}: {lookup['outcome']}; candidates {lookup['candidates']}, "
                    f"decisions: {decided}",
                )
            )
    else:
        rows.append(("Distinct ids found by", "entered by the subject or by staff (no profile lookup)"))
    return [*section_heading("Decisions and how the ids were found", s), facts_table(rows, s)]


def _timeline(pack: Pack, s: Styles) -> list[Flowable]:
    """The request's events in sentences (the staff timeline's), each with its number in the audit trail; the
    raw records and their hashes are in the JSON pack."""
    readable = pack.get("timeline_readable") or []
    return [
        *section_heading(f"Timeline ({len(pack['timeline'])} events)", s),
        data_table(
            ["#", "When (UTC)", "What happened"],
            [[e["sequence"], _iso_short(e["at"]), e["sentence"]] for e in readable],
            [0.6, 1.9, 8.0],
            styles=s,
        ),
    ]


def _task_events(pack: Pack, s: Styles) -> list[Flowable]:
    task_events = pack["task_events"]
    if not task_events:
        return []
    return [
        *section_heading(f"Events of its Mixpanel tasks ({len(task_events)})", s),
        para(
            "A deletion coalesced with other requests is one Mixpanel task: what happened to the task is "
            "recorded against the task, not against any one request, and is listed here.",
            s["muted"],
        ),
        data_table(
            ["#", "When (UTC)", "Task", "Action", "Details"],
            [
                [
                    e["sequence"],
                    _iso_short(e["occurred_at"]),
                    e["payload"]["task_id"],
                    e["action"],
                    _payload_text({k: v for k, v in e["payload"].items() if k != "task_id"}),
                ]
                for e in task_events
            ],
            [0.6, 1.9, 0.8, 2.5, 4.7],
            styles=s,
        ),
    ]


def _tasks(pack: Pack, s: Styles) -> list[Flowable]:
    heading = section_heading(f"Mixpanel tasks ({len(pack['tasks'])})", s)
    if not pack["tasks"]:
        return [*heading, para("No Mixpanel task was created for this request.", s["body"])]
    flowables = [flowable for task in pack["tasks"] for flowable in _task(task, s)]
    # The heading goes with the first task's facts: never alone at the foot of a page.
    page_break, title = heading
    return [page_break, KeepTogether([title, flowables[0]]), *flowables[1:]]


def _task(task: dict[str, Any], s: Styles) -> list[Flowable]:
    """One Mixpanel task: its facts kept on one page, then its remote status history and its calls."""
    facts = KeepTogether(
        [
            markup(
                "Task {id}: {kind} in {project}", s["h3"], id=task["id"], kind=task["kind"], project=task["project"]
            ),
            facts_table(
                [
                    ("Tracking id", task["tracking_id"]),
                    ("State / remote status", f"{task['state']} / {task['remote_status'] or NO_VALUE}"),
                    ("Compliance type", f"{task['compliance_type']} {task['disclosure_type']}".strip()),
                    ("Requesting user (Mixpanel)", task["requesting_user"]),
                    ("Distinct ids / requests served", f"{task['distinct_id_count']} / {task['requests_served']}"),
                    (
                        "Created / submitted / finished",
                        " / ".join(_iso_short(task[k]) for k in ("created_at", "submitted_at", "finished_at")),
                    ),
                    ("Attempts / polls", f"{task['attempts']} / {task['polls']}"),
                    ("Split from task", task["parent_id"]),
                    ("Last error", task["last_error"]),
                ],
                s,
                mono={"Tracking id"},
            ),
        ]
    )
    return [facts, *_status_history(task, s), *_task_calls(task, s)]


def _history_rows(history: Any) -> list[list[Any]]:
    """Mixpanel's status history as rows; its entries are whatever the API sent, so every shape is tolerated."""
    rows = []
    for entry in history if isinstance(history, list) else []:
        if isinstance(entry, dict):
            when = entry.get("at") or entry.get("time") or entry.get("checked_at") or ""
            status = entry.get("status") or entry.get("remote_status") or ""
            rest = {k: v for k, v in entry.items() if k not in {"at", "time", "checked_at", "status", "remote_status"}}
            rows.append([_iso_short(str(when)) if when else NO_VALUE, status, _payload_text(rest)])
        else:
            rows.append([NO_VALUE, str(entry), ""])
    return rows


def _status_history(task: dict[str, Any], s: Styles) -> list[Flowable]:
    history = _history_rows(task["status_history"])
    if not history:
        return []
    return [
        para("Remote status history", s["small"]),
        data_table(["When", "Status", "Details"], history, [2, 1.6, 5], styles=s),
    ]


def _task_calls(task: dict[str, Any], s: Styles) -> list[Flowable]:
    if not task["api_calls"]:
        return []
    return [
        para("Calls to Mixpanel", s["small"]),
        data_table(
            ["When", "Operation", "HTTP", "Outcome", "ms"],
            [
                [_iso_short(c["at"]), c["operation"], c["http_status"], c["outcome"], c["duration_ms"]]
                for c in task["api_calls"]
            ],
            [2, 2, 0.8, 1.6, 0.8],
            styles=s,
        ),
    ]


def _export(pack: Pack, s: Styles) -> list[Flowable]:
    export = pack["export"]
    heading = section_heading("Exported file", s, room=30 * mm)
    if not export:
        return [*heading, para("No file was exported for this request.", s["body"])]
    return [
        *heading,
        facts_table(
            [
                ("SHA-256", export["sha256"]),
                ("Size", f"{export['size']} bytes"),
                ("Stored", _iso_short(export["created_at"])),
                ("Expires", _iso_short(export["expires_at"])),
                ("Deleted", _iso_short(export["deleted_at"]) if export["deleted_at"] else "no"),
                ("Downloads", export["download_count"]),
            ],
            s,
            mono={"SHA-256"},
        ),
    ]


def _hashes(pack: Pack, s: Styles) -> list[Flowable]:
    """The request's events and its tasks' events in one list, in chain order, as an export would show them."""
    hashed = sorted(
        [(e, "") for e in pack["timeline"]] + [(e, f" (task {e['payload']['task_id']})") for e in pack["task_events"]],
        key=lambda pair: pair[0]["sequence"],
    )
    return [
        *section_heading("Audit events and their hashes", s),
        data_table(
            ["#", "When (UTC, as hashed)", "Action", "prev_hash / hash"],
            [
                [
                    e["sequence"],
                    para(e["occurred_at"], s["mono"]),
                    e["action"] + marker,
                    Paragraph(f"{escape(e['prev_hash'])}<br/>{escape(e['hash'])}", s["mono"]),
                ]
                for e, marker in hashed
            ],
            [0.5, 2.6, 1.7, 5.2],
            styles=s,
        ),
    ]


def _how_to_check(pack: Pack, s: Styles) -> list[Flowable]:
    return [
        Spacer(1, 6),
        para("How to check this pack", s["h3"]),
        para(
            "Each event's hash is HMAC-SHA256 under the organisation's audit chain key of its prev_hash followed "
            "by the canonical JSON of the event (occurred_at, actor_type, actor_id, actor_label, action, "
            "request_reference, payload; sorted keys, no spaces, occurred_at in UTC with microseconds). The "
            "JSON twin of this pack holds the events exactly as hashed. Export the audit trail up to event "
            f"{pack['chain']['head_sequence']} and run `python manage.py audit verify --file EXPORT.jsonl`: the "
            "export must verify, end at the head hash above, and contain these events with the same hashes.",
            s["small"],
        ),
    ]


SECTIONS: tuple[Section, ...] = (
    _cover,
    _request_facts,
    _chain,
    _decisions_and_ids,
    _timeline,
    _task_events,
    _tasks,
    _export,
    _hashes,
    _how_to_check,
)


def _document_text(pack: Pack) -> dict[str, str]:
    """The PDF's metadata, and the running head and footer (with the chain head) drawn on every page."""
    reference, chain = pack["request"]["reference"], pack["chain"]
    return {
        "title": f"Evidence pack {reference}",
        "subject": f"{pack['organisation']} evidence pack",
        "running_head": f"{pack['organisation']} · Evidence pack · {reference}",
        "footer": f"Generated {_iso_short(pack['generated_at'])} · chain head {chain['head_sequence']} "
        f"{chain['head_hash'][:16]}…",
    }


def render_evidence_pdf(pack: Pack, *, deterministic: bool = False) -> bytes:
    """The evidence pack as a PDF: the same data as its JSON twin, laid out for reading."""
    register_fonts()
    styles = paragraph_styles()
    story = [flowable for section in SECTIONS for flowable in section(pack, styles)]
    return build_document(story, **_document_text(pack), deterministic=deterministic)
