"""The summary's charts as ReportLab drawings: drawn into the PDF, and as SVG on the HTML page."""

from __future__ import annotations

import base64
from math import ceil
from typing import Any

from reportlab.graphics import renderSVG
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.units import mm

from gdpr_requests.reports.pdf.base import (
    CONTENT_WIDTH,
    FONT,
    FONT_BOLD,
    INK,
    MEDIAN_COLOUR,
    MUTED,
    P90_COLOUR,
    RULE,
    SEGMENT_COLOURS,
    register_fonts,
)
from gdpr_requests.reports.summary import SEGMENTS, ComplianceSummary


def _nice_step(maximum: float) -> float:
    if maximum <= 5:
        return 1
    raw = maximum / 5
    magnitude = 10 ** (len(str(int(raw))) - 1)
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude  # pragma: no cover


def _format_value(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _bar_chart(
    title: str,
    categories: list[str],
    series: list[list[float | None]],
    names: list[str],
    fills: list[Any],
    *,
    stacked: bool,
    unit: str,
    value_labels: bool = False,
    empty_note: str = "No data in this period",
) -> Drawing:
    """A bar chart; ``None`` is a missing value (drawn as "no data"), 0 a real zero.

    ``value_labels`` writes each bar's number above it, so a bar of 0 (or a single bar) still reads as a point.
    """
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
    if value_labels:
        chart.barLabels.fontName = FONT
        chart.barLabels.fontSize = 6.5
        chart.barLabels.fillColor = INK
        chart.barLabels.boxAnchor = "s"
        chart.barLabels.dy = 2
        chart.barLabelFormat = "values"
        # "no data" once per category (over the first series), so two labels never overlap; where the
        # categories are many and narrow, a dash explained next to the unit.
        dense = len(categories) > 8
        missing = "\u2013" if dense else "no data"
        chart.barLabelArray = [
            [(_format_value(value) if value is not None else (missing if index == 0 else "")) for value in values]
            for index, values in enumerate(series)
        ]
        if dense and any(value is None for values in series for value in values):
            unit = f"{unit}   (\u2013 no data)"
    drawing.add(chart)
    # A labelled 0 is a value worth seeing; an unlabelled 0 (no requests) draws nothing.
    if not any(value is not None and (value or value_labels) for values in series for value in values):
        drawing.add(
            String(
                chart.x + chart.width / 2,
                chart.y + chart.height / 2,
                empty_note,
                fontName=FONT,
                fontSize=8,
                fillColor=MUTED,
                textAnchor="middle",
            )
        )
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
        empty_note=f"No requests {which} in this period",
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
        value_labels=True,
        empty_note="No requests were answered in this period",
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
