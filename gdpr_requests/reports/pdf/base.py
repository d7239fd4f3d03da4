"""What both PDFs share: fonts (DejaVu, embedded, with a CJK fallback), styles, escaped text, tables, and
the page frame with running head and "page X of Y".

Every piece of data goes through ``escape_text`` (``para``, ``markup``): text is drawn as text, never read as
Paragraph markup. ``build_document(..., deterministic=True)`` uses ReportLab's invariant mode (fixed creation date
and document id), so two renders of the same data are byte-identical.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar
from xml.sax.saxutils import escape

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
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
    PageTemplate,
    Paragraph,
    Table,
    TableStyle,
)

from gdpr_requests.reports.summary import NO_VALUE

T = TypeVar("T")

# DejaVu (settings.REPORTS_FONT_DIR) has Latin, Greek and Cyrillic but no CJK: runs of characters it lacks are
# drawn with settings.REPORTS_FALLBACK_FONT when it is installed (Debian fonts-droid-fallback), else left blank.
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
    folder = Path(settings.REPORTS_FONT_DIR)
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
    fallback = Path(settings.REPORTS_FALLBACK_FONT)
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


def paragraph_styles() -> dict[str, ParagraphStyle]:
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
            keepWithNext=1,  # never a heading alone at the foot of a page
        ),
        "h3": ParagraphStyle(
            "h3", parent=base, fontName=FONT_BOLD, fontSize=9, leading=12, spaceBefore=6, spaceAfter=2, keepWithNext=1
        ),
        "figure": ParagraphStyle("figure", parent=base, fontName=FONT_BOLD, fontSize=12, leading=15, textColor=ACCENT),
        "figure_label": ParagraphStyle("figure_label", parent=base, fontSize=7, leading=9, textColor=MUTED),
    }


def escape_text(value: Any) -> str:
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


def para(value: Any, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape_text(value), style)


# Where a code may be broken across lines: after a dot, underscore, slash, colon, equals sign, comma or hyphen.
_BREAK_POINTS = re.compile(r"(?<=[._/:=,-])")


def break_long_tokens(text: str, style: ParagraphStyle, width: float) -> str:
    """``text`` with line breaks inside any word wider than ``width``, placed after its dots and underscores.

    ReportLab splits a word too wide for its cell at whatever letter the edge falls on ("export.code_reques" /
    "ted"); a code such as ``export.code_requested`` reads far better broken between its parts. A part that is
    still too wide is left to ReportLab.
    """

    def width_of(value: str) -> float:
        return pdfmetrics.stringWidth(value, style.fontName, style.fontSize)

    def fit(token: str) -> str:
        if width_of(token) <= width:
            return token
        lines: list[str] = []
        line = ""
        for part in _BREAK_POINTS.split(token):
            if line and width_of(line + part) > width:
                lines.append(line)
                line = part
            else:
                line += part
        lines.append(line)
        return "\n".join(lines)

    return " ".join(fit(token) for token in text.split(" "))


def cell_para(value: Any, style: ParagraphStyle, width: float) -> Paragraph:
    """A table cell ``width`` points wide (padding excluded) whose codes wrap at word boundaries."""
    if isinstance(value, str) and value:
        value = break_long_tokens(value, style, width)
    return para(value, style)


def markup(template: str, style: ParagraphStyle, **values: Any) -> Paragraph:
    """A Paragraph from our own markup ``template`` with data ``values`` escaped into it."""
    return Paragraph(template.format(**{name: escape_text(value) for name, value in values.items()}), style)


def section_heading(text: str, styles: dict[str, ParagraphStyle], *, room: float = 40 * mm) -> list[Flowable]:
    """A section's h2, moved to the next page unless ``room`` is left for it and the start of its content."""
    return [CondPageBreak(room), para(text, styles["h2"])]


def table_or_note(
    rows: Sequence[T], table: Callable[[Sequence[T]], Flowable], note: str, styles: dict[str, ParagraphStyle]
) -> Flowable:
    """``table(rows)``, or ``note`` in body text when there are no rows (an empty table says less)."""
    return table(rows) if rows else para(note, styles["body"])


# --- Tables -------------------------------------------------------------------------------------------
# Cells are Paragraphs with their own fonts, but a Table still selects its default font (Helvetica) for plain
# cells; naming ours keeps every font in the file embedded.
TABLE_FONT = ("FONT", (0, 0), (-1, -1), FONT, 8)


def data_table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    widths: Sequence[float],
    *,
    styles: dict[str, ParagraphStyle],
    highlight: Callable[[int], bool] | None = None,
    cell_style: str = "cell",
) -> Table:
    """A data table: bold header repeated on each page, zebra rows, optional highlighted (warning) rows."""
    scale = CONTENT_WIDTH / sum(widths)
    col_widths = [w * scale for w in widths]
    # The room for text in each column: its width less the 4 pt of padding on either side (set below).
    room = [w - 8 for w in col_widths]
    data: list[list[Any]] = [
        [cell_para(title, styles["cell_bold"], width) for title, width in zip(header, room, strict=False)]
    ]
    for row in rows:
        data.append(
            [
                cell if isinstance(cell, Flowable) else cell_para(cell, styles[cell_style], width)
                for cell, width in zip(row, room, strict=False)
            ]
        )
    table = Table(data, colWidths=col_widths, repeatRows=1, hAlign="LEFT")
    commands: list[tuple[Any, ...]] = [
        TABLE_FONT,
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


def facts_table(
    pairs: Sequence[tuple[str, Any]], styles: dict[str, ParagraphStyle], *, mono: set[str] | None = None
) -> Table:
    """A two-column label/value table."""
    mono = mono or set()
    widths = [CONTENT_WIDTH * 0.28, CONTENT_WIDTH * 0.72]
    # Less the 6 pt of padding on either side (ReportLab's default).
    data = [
        [
            cell_para(label, styles["cell_bold"], widths[0] - 12),
            cell_para(value, styles["mono"] if label in mono else styles["cell"], widths[1] - 12),
        ]
        for label, value in pairs
    ]
    table = Table(data, colWidths=widths, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                TABLE_FONT,
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, RULE),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 2.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
                ("BACKGROUND", (0, 0), (0, -1), ZEBRA),
            ]
        )
    )
    return table


def key_figures_table(figures: Sequence[tuple[str, str]], styles: dict[str, ParagraphStyle]) -> Table:
    """The headline numbers as a row of boxes (four per row)."""
    per_row = 4
    cells = [[para(value, styles["figure"]), para(label, styles["figure_label"])] for label, value in figures]
    rows = []
    for start in range(0, len(cells), per_row):
        chunk = cells[start : start + per_row]
        chunk += [["", ""]] * (per_row - len(chunk))
        rows.append(
            [
                Table([[value], [label]], colWidths=[CONTENT_WIDTH / per_row - 8], style=[TABLE_FONT])
                for value, label in chunk
            ]
        )
    table = Table(rows, colWidths=[CONTENT_WIDTH / per_row] * per_row, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                TABLE_FONT,
                ("BOX", (0, 0), (-1, -1), 0.5, RULE),
                ("INNERGRID", (0, 0), (-1, -1), 0.5, RULE),
                ("BACKGROUND", (0, 0), (-1, -1), ZEBRA),
                ("TOPPADDING", (0, 0), (-1, -1), 3),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
            ]
        )
    )
    return table


# --- Document frame -----------------------------------------------------------------------------------
class NumberedCanvas(rl_canvas.Canvas):
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


def build_document(
    story: list[Any], *, title: str, subject: str, running_head: str, footer: str, deterministic: bool
) -> bytes:
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
    doc.build(story, canvasmaker=NumberedCanvas)
    return buffer.getvalue()


def local_stamp(value: datetime) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M %Z")
