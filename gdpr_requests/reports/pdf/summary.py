"""The compliance summary as a PDF: the same builder output and formatted numbers as the HTML page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reportlab.lib.units import mm
from reportlab.platypus import (
    CondPageBreak,
    Spacer,
)

from gdpr_requests.reports.pdf.base import (
    build_document,
    data_table,
    key_figures_table,
    local_stamp,
    markup,
    para,
    paragraph_styles,
    register_fonts,
)
from gdpr_requests.reports.pdf.charts import summary_charts
from gdpr_requests.reports.summary import SEGMENTS, ComplianceSummary


# --- Compliance summary -------------------------------------------------------------------------------
def _pairs(received: Sequence[int], closed: Sequence[int]) -> list[str]:
    return [f"{a} / {b}" for a, b in zip(received, closed, strict=True)]


def render_summary_pdf(summary: ComplianceSummary, *, deterministic: bool = False) -> bytes:
    """The compliance summary as a PDF (same builder output, same formatted numbers as the HTML page)."""
    register_fonts()
    s = paragraph_styles()
    story: list[Any] = [
        para("Compliance summary", s["title"]),
        markup(
            "{org} · {period} · by {unit}",
            s["subtitle"],
            org=summary.organisation,
            period=summary.period_label,
            unit=summary.granularity,
        ),
        Spacer(1, 3),
        markup(
            "Generated {at} by {who}. Open requests and credentials are as at that time.",
            s["muted"],
            at=local_stamp(summary.generated_at),
            who=summary.generated_by or "system",
        ),
        Spacer(1, 8),
        key_figures_table(summary.key_figures(), s),
        Spacer(1, 6),
    ]
    charts = summary_charts(summary)

    story += [para("Requests received and closed", s["h2"]), charts["received"], Spacer(1, 4), charts["closed"]]
    story += [
        CondPageBreak(60 * mm),
        para(f"Per {summary.granularity}: received / closed by kind and regulation", s["h3"]),
        data_table(
            [summary.bucket_noun, *[segment.label for segment in SEGMENTS], "Total"],
            [
                [
                    bucket.label,
                    *_pairs(bucket.received_cells, bucket.closed_cells),
                    f"{bucket.received_total} / {bucket.closed_total}",
                ]
                for bucket in summary.buckets
            ]
            + [
                [
                    para("Period", s["cell_bold"]),
                    *_pairs(list(summary.received_by_segment.values()), list(summary.closed_by_segment.values())),
                    para(f"{summary.received_total} / {summary.closed_total}", s["cell_bold"]),
                ]
            ],
            [3, 1.6, 1.6, 1.6, 1.6, 1.4],
            styles=s,
        ),
        Spacer(1, 4),
        para(
            "Closed in the period by outcome: "
            + ", ".join(f"{label} {count}" for label, count in summary.closed_by_status),
            s["small"],
        ),
    ]

    story += [
        CondPageBreak(90 * mm),
        para("Time to close and deadlines", s["h2"]),
        charts["days"],
        data_table(
            [summary.bucket_noun, "Answered", "On time", "Median days", "90th pct days"],
            [
                [bucket.label, bucket.answered, bucket.on_time, bucket.median_display, bucket.p90_display]
                for bucket in summary.buckets
            ],
            [3.2, 1.5, 1.5, 1.5, 1.5],
            styles=s,
        ),
        Spacer(1, 4),
        para(
            "Answered means completed or rejected. Days to close: closing date minus receipt date (calendar "
            "days). On time: closed on or before the due date in force (extended if extended). Percentiles "
            "interpolate linearly between ranks.",
            s["muted"],
        ),
    ]
    if summary.late:
        story += [
            para(f"Answered late ({len(summary.late)})", s["h3"]),
            data_table(
                ["Reference", "Regulation", "Due", "Closed", "Days late"],
                [
                    [r["reference"], r["regulation"].upper(), r["due_at"], r["closed_on"], r["days_late"]]
                    for r in summary.late
                ],
                [2, 1.2, 1.5, 1.5, 1],
                styles=s,
            ),
        ]

    story += [
        CondPageBreak(40 * mm),
        markup(
            "Open requests now: {open}, of which overdue: {overdue}",
            s["h2"],
            open=summary.open_count,
            overdue=summary.overdue_count,
        ),
    ]
    if summary.open_requests:
        rows = summary.open_requests
        story.append(
            data_table(
                ["Reference", "Kind", "Regulation", "Status", "Received", "Due", "Overdue by"],
                [
                    [
                        r["reference"],
                        r["kind"],
                        r["regulation"],
                        r["status"],
                        r["received_on"],
                        f"{r['due_at'].isoformat()}{' (extended)' if r['extended'] else ''}",
                        f"{r['days_overdue']} days" if r["overdue"] else "",
                    ]
                    for r in rows
                ],
                [2, 1.1, 1.4, 1.4, 1.3, 2, 1.2],
                styles=s,
                highlight=lambda index: rows[index]["overdue"],
            )
        )
        if summary.open_count > len(rows):
            story.append(para(f"Showing the first {len(rows)} by due date.", s["muted"]))
    else:
        story.append(para("No open requests.", s["body"]))

    story += [CondPageBreak(40 * mm), para(f"Extensions in the period ({len(summary.extensions)})", s["h2"])]
    if summary.extensions:
        story.append(
            data_table(
                ["Reference", "Regulation", "Extended on", "Was due", "Now due", "Reason"],
                [
                    [r["reference"], r["regulation"], r["extended_on"], r["original_due_at"], r["due_at"], r["reason"]]
                    for r in summary.extensions
                ],
                [1.9, 1.4, 1.5, 1.3, 1.3, 4.2],
                styles=s,
            )
        )
    else:
        story.append(para("No deadline was extended in the period.", s["body"]))

    story += [CondPageBreak(40 * mm), para(f"Rejections by reason ({summary.rejected_count})", s["h2"])]
    if summary.rejections:
        story.append(
            data_table(
                ["Reason", "Requests", "References"],
                [[r["reason"], r["count"], ", ".join(r["references"])] for r in summary.rejections],
                [5, 1, 4],
                styles=s,
            )
        )
    else:
        story.append(para("No request was rejected in the period.", s["body"]))

    story += [CondPageBreak(50 * mm), para("Mixpanel tasks created in the period", s["h2"])]
    kinds, state_rows = summary.task_state_table()
    story.append(
        data_table(
            ["State", *kinds, "Total"],
            [[state, *counts, total] for state, counts, total in state_rows],
            [3, *[1.2] * len(kinds), 1.2],
            styles=s,
        )
    )
    if summary.task_failures:
        story += [
            para(f"Failed, paused or needing attention ({summary.task_failure_count})", s["h3"]),
            data_table(
                ["Task", "Project", "Kind", "Tracking id", "State", "Remote", "Attempts", "Last error"],
                [
                    [
                        r["task_id"],
                        r["project"],
                        r["kind"],
                        r["tracking_id"],
                        r["state"],
                        r["remote_status"],
                        r["attempts"],
                        r["last_error"],
                    ]
                    for r in summary.task_failures
                ],
                [0.7, 1.5, 1.1, 2, 1.4, 1.1, 1.3, 3],
                styles=s,
            ),
        ]
    story += [
        markup(
            "Calls to Mixpanel in the period: {total}, without a 2xx answer: {failed}",
            s["h3"],
            total=summary.api_call_count,
            failed=summary.api_call_failures,
        ),
    ]
    if summary.api_calls:
        story.append(
            data_table(
                ["Operation", "Outcome", "HTTP status", "Calls"],
                [[r["operation"], r["outcome"], r["http_status"], r["count"]] for r in summary.api_calls],
                [2, 2, 1, 1],
                styles=s,
            )
        )

    story += [CondPageBreak(40 * mm), para("Mixpanel credentials", s["h2"])]
    if summary.credentials:
        rows = summary.credentials
        story.append(
            data_table(
                ["Project", "Active", "Credential", "Last checked", "Token expires", "Days left"],
                [
                    [
                        r["project"],
                        r["active"],
                        r["credential_status"],
                        r["checked_at"],
                        r["expires_on"],
                        r["days_left"],
                    ]
                    for r in rows
                ],
                [3, 0.9, 1.4, 1.9, 1.5, 1],
                styles=s,
                highlight=lambda index: rows[index]["warning"],
            )
        )
    else:
        story.append(para("No Mixpanel project is configured.", s["body"]))

    return build_document(
        story,
        title=f"Compliance summary {summary.period_label}",
        subject=f"{summary.organisation} compliance summary",
        running_head=f"{summary.organisation} · Compliance summary · {summary.period_label}",
        footer=f"Generated {local_stamp(summary.generated_at)}",
        deterministic=deterministic,
    )
