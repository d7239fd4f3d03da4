"""PDF rendering (ReportLab) of the compliance summary and the evidence pack, and the charts they share.

- Fonts: DejaVu, embedded (subset) so non-Latin text renders (東京, Ωμέγα, Łódź); if the fonts are missing the
  renderer raises PdfFontsMissing naming the Debian package to install.
- Every piece of data goes through ``_para``/``escape``: text is drawn as text, never read as Paragraph markup.
- ``deterministic=True`` fixes the creation date and the document id (ReportLab's invariant mode), so two renders
  of the same data are byte-identical (what the tests compare).
- Charts are ReportLab drawings; the HTML page shows the same drawings as SVG (``chart_svg``).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from math import ceil
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from reportlab.graphics import renderSVG
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas as rl_canvas
from reportlab.platypus import (
    BaseDocTemplate,
    CondPageBreak,
    Flowable,
    Frame,
    KeepTogether,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from .reports.summary import NO_VALUE, SEGMENTS, ComplianceSummary

DEFAULT_FONT_DIR = "/usr/share/fonts/truetype/dejavu"
# DejaVu has Latin, Greek and Cyrillic but no CJK: runs of characters it lacks are drawn with this font when it
# is installed (Debian fonts-droid-fallback), otherwise they come out blank.
DEFAULT_FALLBACK_FONT = "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"
FALLBACK_FONT = "DroidSansFallback"
FONT_FILES = {
    "DejaVuSans": "DejaVuSans.ttf",
    "DejaVuSans-Bold": "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique": "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono": "DejaVuSansMono.ttf",
}
FONT = "DejaVuSans"
FONT_BOLD = "DejaVuSans-Bold"
FONT_ITALIC = "DejaVuSans-Oblique"
FONT_MONO = "DejaVuSansMono"

INK = colors.HexColor("#1f2937")
MUTED = colors.HexColor("#6b7280")
RULE = colors.HexColor("#d1d5db")
HEADER_FILL = colors.HexColor("#e8edf5")
ZEBRA = colors.HexColor("#f7f8fa")
ACCENT = colors.HexColor("#1e3a8a")
WARN_FILL = colors.HexColor("#fdecea")
WARN_INK = colors.HexColor("#9b1c1c")
GOOD_INK = colors.HexColor("#166534")
# One colour per kind-and-regulation segment, in SEGMENTS order; distinguishable in greyscale too.
SEGMENT_COLOURS = [
    colors.HexColor("#1e3a8a"),
    colors.HexColor("#60a5fa"),
    colors.HexColor("#9a3412"),
    colors.HexColor("#fdba74"),
]
MEDIAN_COLOUR = colors.HexColor("#1e3a8a")
P90_COLOUR = colors.HexColor("#93c5fd")

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 18 * mm
CONTENT_WIDTH = PAGE_WIDTH - 2 * MARGIN


class PdfFontsMissing(ImproperlyConfigured):
    """The DejaVu fonts the PDFs embed are not installed."""


# --- Fonts and styles ---------------------------------------------------------------------------------
_fonts_ready = False
_main_chars: frozenset[int] = frozenset()
_fallback_chars: frozenset[int] = frozenset()


def register_fonts() -> None:
    """Register the DejaVu fonts once per process (raises PdfFontsMissing with what to install)."""
    global _fonts_ready, _main_chars, _fallback_chars
    if _fonts_ready:
        return
    folder = Path(getattr(settings, "REPORTS_FONT_DIR", DEFAULT_FONT_DIR))
    missing = [name for name in FONT_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise PdfFontsMissing(
            f"PDF reports need the DejaVu fonts in {folder} (missing: {', '.join(missing)}). "
            "Install them with: apt-get install fonts-dejavu-core"
        )
    for name, filename in FONT_FILES.items():
        pdfmetrics.registerFont(TTFont(name, str(folder / filename)))
    pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=FONT_BOLD, italic=FONT_ITALIC, boldItalic=FONT_BOLD)
    _main_chars = frozenset(pdfmetrics.getFont(FONT).face.charToGlyph)
    fallback = Path(getattr(settings, "REPORTS_FALLBACK_FONT", DEFAULT_FALLBACK_FONT))
    if fallback.is_file():
        pdfmetrics.registerFont(TTFont(FALLBACK_FONT, str(fallback)))
        _fallback_chars = frozenset(pdfmetrics.getFont(FALLBACK_FONT).face.charToGlyph) - _main_chars
    _fonts_ready = True


def has_fallback_font() -> bool:
    """Whether characters DejaVu lacks (Chinese, Japanese, Korean) can be drawn."""
    register_fonts()
    return bool(_fallback_chars)


def _with_fallback(text: str) -> str:
    """Escape ``text`` for a Paragraph, switching to the fallback font for runs of characters DejaVu lacks."""
    if not _fallback_chars or all(ord(char) in _main_chars or char.isspace() for char in text):
        return escape(text)
    parts: list[str] = []
    run: list[str] = []
    run_is_fallback = False
    for char in text:
        is_fallback = ord(char) in _fallback_chars
        if run and is_fallback != run_is_fallback:
            parts.append(_run(run, run_is_fallback))
            run = []
        run.append(char)
        run_is_fallback = is_fallback
    parts.append(_run(run, run_is_fallback))
    return "".join(parts)


def _run(chars: list[str], fallback: bool) -> str:
    text = escape("".join(chars))
    return f'<font name="{FALLBACK_FONT}">{text}</font>' if fallback else text


def _styles() -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("body", fontName=FONT, fontSize=8.5, leading=11, textColor=INK, alignment=TA_LEFT)
    return {
        "body": base,
        "small": ParagraphStyle("small", parent=base, fontSize=7.5, leading=9.5),
        "muted": ParagraphStyle("muted", parent=base, fontSize=7.5, leading=9.5, textColor=MUTED),
        "cell": ParagraphStyle("cell", parent=base, fontSize=7.5, leading=9.2),
        "cell_bold": ParagraphStyle("cell_bold", parent=base, fontName=FONT_BOLD, fontSize=7.5, leading=9.2),
        "mono": ParagraphStyle("mono", parent=base, fontName=FONT_MONO, fontSize=6.2, leading=8),
        "title": ParagraphStyle("title", parent=base, fontName=FONT_BOLD, fontSize=18, leading=22, textColor=ACCENT),
        "subtitle": ParagraphStyle("subtitle", parent=base, fontSize=10, leading=13, textColor=MUTED),
        "h2": ParagraphStyle(
            "h2",
            parent=base,
            fontName=FONT_BOLD,
            fontSize=11.5,
            leading=14,
            spaceBefore=10,
            spaceAfter=4,
            textColor=ACCENT,
        ),
        "h3": ParagraphStyle(
            "h3", parent=base, fontName=FONT_BOLD, fontSize=9, leading=12, spaceBefore=6, spaceAfter=2
        ),
        "figure": ParagraphStyle("figure", parent=base, fontName=FONT_BOLD, fontSize=12, leading=15, textColor=ACCENT),
        "figure_label": ParagraphStyle("figure_label", parent=base, fontSize=7, leading=9, textColor=MUTED),
    }


def _text(value: Any) -> str:
    """Any value as escaped Paragraph text: data is never read as markup."""
    if value is None or value == "":
        return escape(NO_VALUE)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        value = timezone.localtime(value).strftime("%Y-%m-%d %H:%M")
    elif isinstance(value, date):
        value = value.isoformat()
    return _with_fallback(str(value)).replace("\n", "<br/>")


def _para(value: Any, style: ParagraphStyle) -> Paragraph:
    return Paragraph(_text(value), style)


def _markup(template: str, style: ParagraphStyle, **values: Any) -> Paragraph:
    """A Paragraph from our own markup ``template`` with data ``values`` escaped into it."""
    return Paragraph(template.format(**{name: _text(value) for name, value in values.items()}), style)


# --- Tables -------------------------------------------------------------------------------------------
# Cells are Paragraphs with their own fonts, but a Table still selects its default font (Helvetica) for plain
# cells; naming ours keeps every font in the file embedded.
_TABLE_FONT = ("FONT", (0, 0), (-1, -1), FONT, 8)


def _table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    widths: Sequence[float],
    *,
    styles: dict[str, ParagraphStyle],
    highlight: Callable[[int], bool] | None = None,
    cell_style: str = "cell",
) -> Table:
    """A data table: bold header repeated on each page, zebra rows, optional highlighted (warning) rows."""
    data: list[list[Any]] = [[_para(title, styles["cell_bold"]) for title in header]]
    for row in rows:
        data.append([cell if isinstance(cell, Flowable) else _para(cell, styles[cell_style]) for cell in row])
    scale = CONTENT_WIDTH / sum(widths)
    table = Table(data, colWidths=[w * scale for w in widths], repeatRows=1, hAlign="LEFT")
    commands: list[tuple[Any, ...]] = [
        _TABLE_FONT,
        ("BACKGROUND", (0, 0), (-1, 0), HEADER_FILL),
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, ACCENT),
        ("LINEBELOW", (0, 1), (-1, -1), 0.25, RULE),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 2.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
        ("LEFTPADDING", (0, 0), (-1, -1), 4),
        ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]
    for index in range(1, len(data)):
        if highlight is not None and highlight(index - 1):
            commands.append(("BACKGROUND", (0, index), (-1, index), WARN_FILL))
        elif index % 2 == 0:
            commands.append(("BACKGROUND", (0, index), (-1, index), ZEBRA))
    table.setStyle(TableStyle(commands))
    return table


def _facts(
    pairs: Sequence[tuple[str, Any]], styles: dict[str, ParagraphStyle], *, mono: set[str] | None = None
) -> Table:
    """A two-column label/value table."""
    mono = mono or set()
    data = [
        [_para(label, styles["cell_bold"]), _para(value, styles["mono"] if label in mono else styles["cell"])]
        for label, value in pairs
    ]
    table = Table(data, colWidths=[CONTENT_WIDTH * 0.28, CONTENT_WIDTH * 0.72], hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                _TABLE_FONT,
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, RULE),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 2.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
                ("BACKGROUND", (0, 0), (0, -1), ZEBRA),
            ]
        )
    )
    return table


def _key_figures(figures: Sequence[tuple[str, str]], styles: dict[str, ParagraphStyle]) -> Table:
    """The headline numbers as a row of boxes (four per row)."""
    per_row = 4
    cells = [[_para(value, styles["figure"]), _para(label, styles["figure_label"])] for label, value in figures]
    rows = []
    for start in range(0, len(cells), per_row):
        chunk = cells[start : start + per_row]
        chunk += [["", ""]] * (per_row - len(chunk))
        rows.append(
            [
                Table([[value], [label]], colWidths=[CONTENT_WIDTH / per_row - 8], style=[_TABLE_FONT])
                for value, label in chunk
            ]
        )
    table = Table(rows, colWidths=[CONTENT_WIDTH / per_row] * per_row, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                _TABLE_FONT,
                ("BOX", (0, 0), (-1, -1), 0.5, RULE),
                ("INNERGRID", (0, 0), (-1, -1), 0.5, RULE),
                ("BACKGROUND", (0, 0), (-1, -1), ZEBRA),
                ("TOPPADDING", (0, 0), (-1, -1), 3),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
            ]
        )
    )
    return table


# --- Charts -------------------------------------------------------------------------------------------
def _nice_step(maximum: float) -> float:
    if maximum <= 5:
        return 1
    raw = maximum / 5
    magnitude = 10 ** (len(str(int(raw))) - 1)
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude  # pragma: no cover


def _bar_chart(
    title: str,
    categories: list[str],
    series: list[list[float | None]],
    names: list[str],
    fills: list[Any],
    *,
    stacked: bool,
    unit: str,
) -> Drawing:
    register_fonts()
    width, height = CONTENT_WIDTH, 62 * mm
    drawing = Drawing(width, height, initialFontName=FONT, initialFontSize=8)
    drawing.add(String(0, height - 10, title, fontName=FONT_BOLD, fontSize=9, fillColor=INK))
    chart = VerticalBarChart()
    chart.x, chart.y = 34, 30
    chart.width, chart.height = width - 34 - 130, height - 62
    # ReportLab needs at least one number per series; an empty period draws an empty axis.
    chart.data = [[value if value is not None else 0 for value in values] or [0] for values in series] or [[0]]
    chart.categoryAxis.categoryNames = categories or [""]
    chart.categoryAxis.style = "stacked" if stacked else "parallel"
    chart.categoryAxis.labels.fontName = FONT
    chart.categoryAxis.labels.fontSize = 6.5
    chart.categoryAxis.labels.fillColor = MUTED
    if len(categories) > 8:
        chart.categoryAxis.labels.angle = 35
        chart.categoryAxis.labels.boxAnchor = "ne"
        chart.categoryAxis.labels.dx, chart.categoryAxis.labels.dy = 2, -2
    else:
        chart.categoryAxis.labels.boxAnchor = "n"
        chart.categoryAxis.labels.dy = -3
    chart.categoryAxis.strokeColor = RULE
    heights = (
        [sum(values) for values in zip(*chart.data, strict=True)] if stacked else [max(v) for v in chart.data]
    ) or [0]
    top = max(max(heights), 1)
    step = _nice_step(top)
    chart.valueAxis.valueMin = 0
    chart.valueAxis.valueMax = ceil(top / step) * step
    chart.valueAxis.valueStep = step
    chart.valueAxis.labels.fontName = FONT
    chart.valueAxis.labels.fontSize = 6.5
    chart.valueAxis.labels.fillColor = MUTED
    chart.valueAxis.labelTextFormat = "%d" if step >= 1 else "%.1f"
    chart.valueAxis.strokeColor = RULE
    chart.valueAxis.visibleGrid = True
    chart.valueAxis.gridStrokeColor = colors.HexColor("#eceff3")
    chart.valueAxis.gridStrokeWidth = 0.5
    chart.barSpacing = 1
    chart.groupSpacing = 6
    for index, fill in enumerate(fills):
        chart.bars[index].fillColor = fill
        chart.bars[index].strokeColor = None
    drawing.add(chart)
    drawing.add(String(0, height - 21, unit, fontName=FONT, fontSize=6.5, fillColor=MUTED))
    legend = Legend()
    legend.x, legend.y = width - 118, height - 26
    legend.fontName = FONT
    legend.fontSize = 7
    legend.alignment = "right"
    legend.dx = legend.dy = 7
    legend.deltay = 11
    legend.columnMaximum = 6
    legend.strokeColor = None
    legend.colorNamePairs = list(zip(fills, names, strict=True))
    drawing.add(legend)
    return drawing


def volume_chart(summary: ComplianceSummary, which: str) -> Drawing:
    """Requests received (``which="received"``) or closed per week or month, stacked by kind and regulation."""
    cells = "received_cells" if which == "received" else "closed_cells"
    columns = [getattr(bucket, cells) for bucket in summary.buckets]
    series = [[column[index] for column in columns] for index in range(len(SEGMENTS))]
    return _bar_chart(
        f"Requests {which} per {summary.granularity}",
        [bucket.short_label for bucket in summary.buckets],
        series,
        [segment.label for segment in SEGMENTS],
        SEGMENT_COLOURS,
        stacked=True,
        unit="requests",
    )


def days_chart(summary: ComplianceSummary) -> Drawing:
    """Median and 90th-percentile days to close of the requests answered in each week or month."""
    return _bar_chart(
        f"Days to close per {summary.granularity} (answered requests)",
        [bucket.short_label for bucket in summary.buckets],
        [[bucket.median_days for bucket in summary.buckets], [bucket.p90_days for bucket in summary.buckets]],
        ["Median", "90th percentile"],
        [MEDIAN_COLOUR, P90_COLOUR],
        stacked=False,
        unit="calendar days",
    )


def summary_charts(summary: ComplianceSummary) -> dict[str, Drawing]:
    return {
        "received": volume_chart(summary, "received"),
        "closed": volume_chart(summary, "closed"),
        "days": days_chart(summary),
    }


_SVG_FAMILY = "'DejaVu Sans', Verdana, sans-serif"


def chart_svg_data_uri(drawing: Drawing) -> str:
    """The drawing as an SVG data URI for an <img> (the page's CSP forbids inline styles, not data: images)."""
    svg = renderSVG.drawToString(drawing)
    # ReportLab names fonts by their registered names; a browser knows the families.
    svg = svg.replace("font-family: DejaVuSans-Bold", f"font-family: {_SVG_FAMILY}; font-weight: bold")
    svg = svg.replace("font-family: DejaVuSans", f"font-family: {_SVG_FAMILY}")
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


# --- Document frame -----------------------------------------------------------------------------------
class _NumberedCanvas(rl_canvas.Canvas):
    """Defers page output so each footer can say "page X of Y"."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Otherwise every page names Helvetica as its starting font, a font the document never uses.
        kwargs["initialFontName"] = kwargs.get("initialFontName") or FONT
        super().__init__(*args, **kwargs)
        self._saved_pages: list[dict[str, Any]] = []

    def showPage(self) -> None:
        self._saved_pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._saved_pages)
        for state in self._saved_pages:
            self.__dict__.update(state)
            self.setFont(FONT, 7)
            self.setFillColor(MUTED)
            self.drawRightString(PAGE_WIDTH - MARGIN, 10 * mm, f"Page {self._pageNumber} of {total}")
            super().showPage()
        super().save()


def _build(story: list[Any], *, title: str, subject: str, running_head: str, footer: str, deterministic: bool) -> bytes:
    register_fonts()
    buffer = io.BytesIO()

    def decorate(canvas: rl_canvas.Canvas, doc: BaseDocTemplate) -> None:
        canvas.saveState()
        canvas.setStrokeColor(RULE)
        canvas.setLineWidth(0.5)
        canvas.line(MARGIN, PAGE_HEIGHT - 12 * mm, PAGE_WIDTH - MARGIN, PAGE_HEIGHT - 12 * mm)
        canvas.setFont(FONT, 7)
        canvas.setFillColor(MUTED)
        canvas.drawString(MARGIN, PAGE_HEIGHT - 10.5 * mm, running_head)
        canvas.line(MARGIN, 13 * mm, PAGE_WIDTH - MARGIN, 13 * mm)
        canvas.drawString(MARGIN, 10 * mm, footer)
        canvas.restoreState()

    doc = BaseDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN,
        title=title,
        author=settings.ORGANISATION_NAME,
        subject=subject,
        creator="Privacy request manager",
        invariant=1 if deterministic else 0,
    )
    frame = Frame(MARGIN, MARGIN, CONTENT_WIDTH, PAGE_HEIGHT - 2 * MARGIN, id="body", leftPadding=0, rightPadding=0)
    doc.addPageTemplates([PageTemplate(id="page", frames=[frame], onPage=decorate)])
    doc.build(story, canvasmaker=_NumberedCanvas)
    return buffer.getvalue()


def _stamp(value: datetime) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M %Z")


# --- Compliance summary -------------------------------------------------------------------------------
def _pairs(received: Sequence[int], closed: Sequence[int]) -> list[str]:
    return [f"{a} / {b}" for a, b in zip(received, closed, strict=True)]


def render_summary_pdf(summary: ComplianceSummary, *, deterministic: bool = False) -> bytes:
    """The compliance summary as a PDF (same builder output, same formatted numbers as the HTML page)."""
    register_fonts()
    s = _styles()
    story: list[Any] = [
        _para("Compliance summary", s["title"]),
        _markup(
            "{org} · {period} · by {unit}",
            s["subtitle"],
            org=summary.organisation,
            period=summary.period_label,
            unit=summary.granularity,
        ),
        Spacer(1, 3),
        _markup(
            "Generated {at} by {who}. Open requests and credentials are as at that time.",
            s["muted"],
            at=_stamp(summary.generated_at),
            who=summary.generated_by or "system",
        ),
        Spacer(1, 8),
        _key_figures(summary.key_figures(), s),
        Spacer(1, 6),
    ]
    charts = summary_charts(summary)

    story += [_para("Requests received and closed", s["h2"]), charts["received"], Spacer(1, 4), charts["closed"]]
    story += [
        CondPageBreak(60 * mm),
        _para(f"Per {summary.granularity}: received / closed by kind and regulation", s["h3"]),
        _table(
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
                    _para("Period", s["cell_bold"]),
                    *_pairs(list(summary.received_by_segment.values()), list(summary.closed_by_segment.values())),
                    _para(f"{summary.received_total} / {summary.closed_total}", s["cell_bold"]),
                ]
            ],
            [3, 1.6, 1.6, 1.6, 1.6, 1.4],
            styles=s,
        ),
        Spacer(1, 4),
        _para(
            "Closed in the period by outcome: "
            + ", ".join(f"{label} {count}" for label, count in summary.closed_by_status),
            s["small"],
        ),
    ]

    story += [
        CondPageBreak(90 * mm),
        _para("Time to close and deadlines", s["h2"]),
        charts["days"],
        _table(
            [summary.bucket_noun, "Answered", "On time", "Median days", "90th pct days"],
            [
                [bucket.label, bucket.answered, bucket.on_time, bucket.median_display, bucket.p90_display]
                for bucket in summary.buckets
            ],
            [3.2, 1.5, 1.5, 1.5, 1.5],
            styles=s,
        ),
        Spacer(1, 4),
        _para(
            "Answered means completed or rejected. Days to close: closing date minus receipt date (calendar "
            "days). On time: closed on or before the due date in force (extended if extended). Percentiles "
            "interpolate linearly between ranks.",
            s["muted"],
        ),
    ]
    if summary.late:
        story += [
            _para(f"Answered late ({len(summary.late)})", s["h3"]),
            _table(
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
        _markup(
            "Open requests now: {open}, of which overdue: {overdue}",
            s["h2"],
            open=summary.open_count,
            overdue=summary.overdue_count,
        ),
    ]
    if summary.open_requests:
        rows = summary.open_requests
        story.append(
            _table(
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
            story.append(_para(f"Showing the first {len(rows)} by due date.", s["muted"]))
    else:
        story.append(_para("No open requests.", s["body"]))

    story += [CondPageBreak(40 * mm), _para(f"Extensions in the period ({len(summary.extensions)})", s["h2"])]
    if summary.extensions:
        story.append(
            _table(
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
        story.append(_para("No deadline was extended in the period.", s["body"]))

    story += [CondPageBreak(40 * mm), _para(f"Rejections by reason ({summary.rejected_count})", s["h2"])]
    if summary.rejections:
        story.append(
            _table(
                ["Reason", "Requests", "References"],
                [[r["reason"], r["count"], ", ".join(r["references"])] for r in summary.rejections],
                [5, 1, 4],
                styles=s,
            )
        )
    else:
        story.append(_para("No request was rejected in the period.", s["body"]))

    story += [CondPageBreak(50 * mm), _para("Mixpanel tasks created in the period", s["h2"])]
    kinds, state_rows = summary.task_state_table()
    story.append(
        _table(
            ["State", *kinds, "Total"],
            [[state, *counts, total] for state, counts, total in state_rows],
            [3, *[1.2] * len(kinds), 1.2],
            styles=s,
        )
    )
    if summary.task_failures:
        story += [
            _para(f"Failed, paused or needing attention ({summary.task_failure_count})", s["h3"]),
            _table(
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
        _markup(
            "Calls to Mixpanel in the period: {total}, without a 2xx answer: {failed}",
            s["h3"],
            total=summary.api_call_count,
            failed=summary.api_call_failures,
        ),
    ]
    if summary.api_calls:
        story.append(
            _table(
                ["Operation", "Outcome", "HTTP status", "Calls"],
                [[r["operation"], r["outcome"], r["http_status"], r["count"]] for r in summary.api_calls],
                [2, 2, 1, 1],
                styles=s,
            )
        )

    story += [CondPageBreak(40 * mm), _para("Mixpanel credentials", s["h2"])]
    if summary.credentials:
        rows = summary.credentials
        story.append(
            _table(
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
        story.append(_para("No Mixpanel project is configured.", s["body"]))

    return _build(
        story,
        title=f"Compliance summary {summary.period_label}",
        subject=f"{summary.organisation} compliance summary",
        running_head=f"{summary.organisation} · Compliance summary · {summary.period_label}",
        footer=f"Generated {_stamp(summary.generated_at)}",
        deterministic=deterministic,
    )


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
    s = _styles()
    req = pack["request"]
    chain = pack["chain"]
    story: list[Any] = [
        _para("Evidence pack", s["title"]),
        _markup("{reference} · {org}", s["subtitle"], reference=req["reference"], org=pack["organisation"]),
        Spacer(1, 3),
        _markup(
            "Generated {at} by {who}. Personal data is left out: the requester is identified only by a prefix "
            "of the keyed email hash.",
            s["muted"],
            at=_iso_short(pack["generated_at"]),
            who=pack["generated_by"] or "system",
        ),
        Spacer(1, 6),
        _para("The request", s["h2"]),
        _facts(
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
        _para("Chain", s["h2"]),
        _facts(
            [
                ("Chain head at generation", f"event {chain['head_sequence']}"),
                ("Head hash", chain["head_hash"]),
                ("Events of this request", chain["request_event_count"]),
                (
                    "Their hashes re-checked",
                    "all match"
                    if chain["request_events_verified"]
                    else f"MISMATCH at events {', '.join(map(str, chain['unverified_sequences']))}",
                ),
            ],
            s,
            mono={"Head hash"},
        ),
    ]

    story += [CondPageBreak(40 * mm), _para(f"Timeline ({len(pack['timeline'])} events)", s["h2"])]
    story.append(
        _table(
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

    story += [CondPageBreak(40 * mm), _para(f"Mixpanel tasks ({len(pack['tasks'])})", s["h2"])]
    if not pack["tasks"]:
        story.append(_para("No Mixpanel task was created for this request.", s["body"]))
    for task in pack["tasks"]:
        block: list[Any] = [
            _markup(
                "Task {id}: {kind} in {project}", s["h3"], id=task["id"], kind=task["kind"], project=task["project"]
            ),
            _facts(
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
                _para("Remote status history", s["small"]),
                _table(["When", "Status", "Details"], history, [2, 1.6, 5], styles=s),
            ]
        if task["api_calls"]:
            story += [
                _para("Calls to Mixpanel", s["small"]),
                _table(
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
    story += [CondPageBreak(30 * mm), _para("Exported file", s["h2"])]
    if export:
        story.append(
            _facts(
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
        story.append(_para("No file was exported for this request.", s["body"]))

    story += [CondPageBreak(40 * mm), _para("Audit events and their hashes", s["h2"])]
    story.append(
        _table(
            ["#", "When (UTC, as hashed)", "Action", "prev_hash / hash"],
            [
                [
                    e["sequence"],
                    _para(e["occurred_at"], s["mono"]),
                    e["action"],
                    Paragraph(f"{escape(e['prev_hash'])}<br/>{escape(e['hash'])}", s["mono"]),
                ]
                for e in pack["timeline"]
            ],
            [0.5, 2.6, 1.7, 5.2],
            styles=s,
        )
    )
    story += [
        Spacer(1, 6),
        _para("How to check this pack", s["h3"]),
        _para(
            "Each event's hash is HMAC-SHA256 under the organisation's audit chain key of its prev_hash followed "
            "by the canonical JSON of the event (occurred_at, actor_type, actor_id, actor_label, action, "
            "request_reference, payload; sorted keys, no spaces, occurred_at in UTC with microseconds). The "
            "JSON twin of this pack holds the events exactly as hashed. Export the audit trail up to event "
            f"{chain['head_sequence']} and run `python manage.py audit verify --file EXPORT.jsonl`: the export must "
            "verify, end at the head hash above, and contain these events with the same hashes.",
            s["small"],
        ),
    ]

    return _build(
        story,
        title=f"Evidence pack {req['reference']}",
        subject=f"{pack['organisation']} evidence pack",
        running_head=f"{pack['organisation']} · Evidence pack · {req['reference']}",
        footer=f"Generated {_iso_short(pack['generated_at'])} · chain head {chain['head_sequence']} "
        f"{chain['head_hash'][:16]}…",
        deterministic=deterministic,
    )
