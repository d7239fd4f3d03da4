"""The compliance summary as a PDF: the same builder output and formatted numbers as the HTML page.

The document is ``SECTIONS`` (at the end), in reading order: each section is a function of the summary that
returns its flowables, so one can be moved, dropped or read without the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import CondPageBreak, Flowable, Spacer

from gdpr_requests.reports.pdf.base import (
    build_document,
    data_table,
    key_figures_table,
    local_stamp,
    markup,
    para,
    paragraph_styles,
    register_fonts,
    section_heading,
    table_or_note,
)
from gdpr_requests.reports.pdf.charts import days_chart, volume_chart
from gdpr_requests.reports.summary import SEGMENTS, ComplianceSummary

Styles = dict[str, ParagraphStyle]
Section = Callable[[ComplianceSummary, Styles], list[Flowable]]


def _cover(summary: ComplianceSummary, s: Styles) -> list[Flowable]:
    """Title, organisation and period, and when (and by whom) the snapshot parts were taken."""
    return [
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
    ]


def _key_figures(summary: ComplianceSummary, s: Styles) -> list[Flowable]:
    return [key_figures_table(summary.key_figures(), s), Spacer(1, 6)]


def _volume_charts(summary: ComplianceSummary, s: Styles) -> list[Flowable]:
    return [
        para("Requests received and closed", s["h2"]),
        volume_chart(summary, "received"),
        Spacer(1, 4),
        volume_chart(summary, "closed"),
    ]


def _pairs(received: Sequence[int], closed: Sequence[int]) -> list[str]:
    return [f"{a} / {b}" for a, b in zip(received, closed, strict=True)]


def _volume_table(summary: ComplianceSummary, s: Styles) -> list[Flowable]:
    """Received / closed per bucket and segment, a bold period row, and the closing outcomes."""
    period_row = [
        para("Period", s["cell_bold"]),
        *_pairs(list(summary.received_by_segment.values()), list(summary.closed_by_segment.values())),
        para(f"{summary.received_total} / {summary.closed_total}", s["cell_bold"]),
    ]
    return [
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
            + [period_row],
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


def _timing(summary: ComplianceSummary, s: Styles) -> list[Flowable]:
    """Days to close per bucket, as a chart and a table, with the definitions the numbers rest on."""
    return [
        *section_heading("Time to close and deadlines", s, room=90 * mm),
        days_chart(summary),
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


def _late_requests(summary: ComplianceSummary, s: Styles) -> list[Flowable]:
    if not summary.late:
        return []
    return [
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


def _open_requests(summary: ComplianceSummary, s: Styles) -> list[Flowable]:
    """The open requests at generation, overdue ones highlighted, and a note when the list was cut."""
    heading = [
        CondPageBreak(40 * mm),
        markup(
            "Open requests now: {open}, of which overdue: {overdue}",
            s["h2"],
            open=summary.open_count,
            overdue=summary.overdue_count,
        ),
    ]
    rows = summary.open_requests
    if not rows:
        return [*heading, para("No open requests.", s["body"])]
    table = data_table(
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
    cut = [para(f"Showing the first {len(rows)} by due date.", s["muted"])] if summary.open_count > len(rows) else []
    return [*heading, table, *cut]


def _extensions(summary: ComplianceSummary, s: Styles) -> list[Flowable]:
    return [
        *section_heading(f"Extensions in the period ({len(summary.extensions)})", s),
        table_or_note(
            summary.extensions,
            lambda rows: data_table(
                ["Reference", "Regulation", "Extended on", "Was due", "Now due", "Reason"],
                [
                    [r["reference"], r["regulation"], r["extended_on"], r["original_due_at"], r["due_at"], r["reason"]]
                    for r in rows
                ],
                [1.9, 1.4, 1.5, 1.3, 1.3, 4.2],
                styles=s,
            ),
            "No deadline was extended in the period.",
            s,
        ),
    ]


def _rejections(summary: ComplianceSummary, s: Styles) -> list[Flowable]:
    return [
        *section_heading(f"Rejections by reason ({summary.rejected_count})", s),
        table_or_note(
            summary.rejections,
            lambda rows: data_table(
                ["Reason", "Requests", "References"],
                [[r["reason"], r["count"], ", ".join(r["references"])] for r in rows],
                [5, 1, 4],
                styles=s,
            ),
            "No request was rejected in the period.",
            s,
        ),
    ]


def _task_states(summary: ComplianceSummary, s: Styles) -> list[Flowable]:
    kinds, state_rows = summary.task_state_table()
    return [
        *section_heading("Mixpanel tasks created in the period", s, room=50 * mm),
        data_table(
            ["State", *kinds, "Total"],
            [[state, *counts, total] for state, counts, total in state_rows],
            [3, *[1.2] * len(kinds), 1.2],
            styles=s,
        ),
    ]


def _task_failures(summary: ComplianceSummary, s: Styles) -> list[Flowable]:
    if not summary.task_failures:
        return []
    return [
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


def _api_calls(summary: ComplianceSummary, s: Styles) -> list[Flowable]:
    heading = markup(
        "Calls to Mixpanel in the period: {total}, without a 2xx answer: {failed}",
        s["h3"],
        total=summary.api_call_count,
        failed=summary.api_call_failures,
    )
    if not summary.api_calls:
        return [heading]
    return [
        heading,
        data_table(
            ["Operation", "Outcome", "HTTP status", "Calls"],
            [[r["operation"], r["outcome"], r["http_status"], r["count"]] for r in summary.api_calls],
            [2, 2, 1, 1],
            styles=s,
        ),
    ]


def _credentials(summary: ComplianceSummary, s: Styles) -> list[Flowable]:
    """Each project's credential at generation; expiring or failing ones highlighted."""
    return [
        *section_heading("Mixpanel credentials", s),
        table_or_note(
            summary.credentials,
            lambda rows: data_table(
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
            ),
            "No Mixpanel project is configured.",
            s,
        ),
    ]


SECTIONS: tuple[Section, ...] = (
    _cover,
    _key_figures,
    _volume_charts,
    _volume_table,
    _timing,
    _late_requests,
    _open_requests,
    _extensions,
    _rejections,
    _task_states,
    _task_failures,
    _api_calls,
    _credentials,
)


def _document_text(summary: ComplianceSummary) -> dict[str, str]:
    """The PDF's metadata, and the running head and footer drawn on every page."""
    return {
        "title": f"Compliance summary {summary.period_label}",
        "subject": f"{summary.organisation} compliance summary",
        "running_head": f"{summary.organisation} · Compliance summary · {summary.period_label}",
        "footer": f"Generated {local_stamp(summary.generated_at)}",
    }


def render_summary_pdf(summary: ComplianceSummary, *, deterministic: bool = False) -> bytes:
    """The compliance summary as a PDF (same builder output, same formatted numbers as the HTML page)."""
    register_fonts()
    styles = paragraph_styles()
    story = [flowable for section in SECTIONS for flowable in section(summary, styles)]
    return build_document(story, **_document_text(summary), deterministic=deterministic)
