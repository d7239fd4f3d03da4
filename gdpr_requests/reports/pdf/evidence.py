"""The evidence pack as a PDF: the same data as its JSON twin, laid out for reading."""

from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib.units import mm
from reportlab.platypus import (
    CondPageBreak,
    KeepTogether,
    Paragraph,
    Spacer,
)

from gdpr_requests.reports.pdf.base import (
    build_document,
    data_table,
    facts_table,
    markup,
    para,
    paragraph_styles,
    register_fonts,
)
from gdpr_requests.reports.summary import NO_VALUE


# --- Evidence pack ------------------------------------------------------------------------------------
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


def _history_rows(history: Any) -> list[list[Any]]:
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


def render_evidence_pdf(pack: dict[str, Any], *, deterministic: bool = False) -> bytes:
    """The evidence pack as a PDF: the same data as its JSON twin, laid out for reading."""
    register_fonts()
    s = paragraph_styles()
    req = pack["request"]
    chain = pack["chain"]
    story: list[Any] = [
        para("Evidence pack", s["title"]),
        markup("{reference} · {org}", s["subtitle"], reference=req["reference"], org=pack["organisation"]),
        Spacer(1, 3),
        markup(
            "Generated {at} by {who}. Personal data is left out: the requester is identified only by a prefix "
            "of the keyed email hash.",
            s["muted"],
            at=_iso_short(pack["generated_at"]),
            who=pack["generated_by"] or "system",
        ),
        Spacer(1, 6),
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
                ("Verified", f"{_iso_short(req['verified_at'])} {req['verified_by']}".strip()),
                ("Approved", f"{_iso_short(req['approved_at'])} {req['approved_by']}".strip()),
                ("Closed", _iso_short(req["closed_at"])),
                ("Due (original)", req["original_due_at"]),
                ("Due (in force)", req["due_at"]),
                (
                    "Extended",
                    f"{_iso_short(req['extended_at'])} {req['extended_by']}".strip() if req["extended_at"] else "no",
                ),
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
                    if chain["request_events_verified"] and chain["task_events_verified"]
                    else f"MISMATCH at events {', '.join(map(str, chain['unverified_sequences']))}",
                ),
            ],
            s,
            mono={"Head hash"},
        ),
    ]

    story += [CondPageBreak(40 * mm), para(f"Timeline ({len(pack['timeline'])} events)", s["h2"])]
    story.append(
        data_table(
            ["#", "When (UTC)", "Actor", "Action", "Details"],
            [
                [
                    e["sequence"],
                    _iso_short(e["occurred_at"]),
                    f"{e['actor_type']}: {e['actor_label']}",
                    e["action"],
                    _payload_text(e["payload"]),
                ]
                for e in pack["timeline"]
            ],
            [0.6, 1.9, 1.7, 2.5, 3.8],
            styles=s,
        )
    )

    task_events = pack["task_events"]
    if task_events:
        story += [
            CondPageBreak(40 * mm),
            para(f"Events of its Mixpanel tasks ({len(task_events)})", s["h2"]),
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

    story += [CondPageBreak(40 * mm), para(f"Mixpanel tasks ({len(pack['tasks'])})", s["h2"])]
    if not pack["tasks"]:
        story.append(para("No Mixpanel task was created for this request.", s["body"]))
    for task in pack["tasks"]:
        block: list[Any] = [
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
        story.append(KeepTogether(block))
        history = _history_rows(task["status_history"])
        if history:
            story += [
                para("Remote status history", s["small"]),
                data_table(["When", "Status", "Details"], history, [2, 1.6, 5], styles=s),
            ]
        if task["api_calls"]:
            story += [
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

    export = pack["export"]
    story += [CondPageBreak(30 * mm), para("Exported file", s["h2"])]
    if export:
        story.append(
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
            )
        )
    else:
        story.append(para("No file was exported for this request.", s["body"]))

    # The request's events and its tasks' events in one list, in chain order, as an export would show them.
    hashed = sorted(
        [(e, "") for e in pack["timeline"]] + [(e, f" (task {e['payload']['task_id']})") for e in task_events],
        key=lambda pair: pair[0]["sequence"],
    )
    story += [CondPageBreak(40 * mm), para("Audit events and their hashes", s["h2"])]
    story.append(
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
        )
    )
    story += [
        Spacer(1, 6),
        para("How to check this pack", s["h3"]),
        para(
            "Each event's hash is HMAC-SHA256 under the organisation's audit chain key of its prev_hash followed "
            "by the canonical JSON of the event (occurred_at, actor_type, actor_id, actor_label, action, "
            "request_reference, payload; sorted keys, no spaces, occurred_at in UTC with microseconds). The "
            "JSON twin of this pack holds the events exactly as hashed. Export the audit trail up to event "
            f"{chain['head_sequence']} and run `python manage.py audit verify --file EXPORT.jsonl`: the export must "
            "verify, end at the head hash above, and contain these events with the same hashes.",
            s["small"],
        ),
    ]

    return build_document(
        story,
        title=f"Evidence pack {req['reference']}",
        subject=f"{pack['organisation']} evidence pack",
        running_head=f"{pack['organisation']} · Evidence pack · {req['reference']}",
        footer=f"Generated {_iso_short(pack['generated_at'])} · chain head {chain['head_sequence']} "
        f"{chain['head_hash'][:16]}…",
        deterministic=deterministic,
    )
