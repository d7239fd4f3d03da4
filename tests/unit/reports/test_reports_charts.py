"""The summary charts: every category is labelled, a lone value shows, and missing data says so."""

from __future__ import annotations

import base64
from datetime import date
from types import SimpleNamespace

import pytest

from gdpr_requests.reports import pdf
from gdpr_requests.reports.summary import make_buckets


def _svg(drawing) -> str:
    return base64.b64decode(pdf.chart_svg_data_uri(drawing).split(",", 1)[1]).decode()


def _months(**values):
    buckets = make_buckets(date(2026, 1, 1), date(2026, 3, 31), "month")
    for bucket in buckets:
        for name, by_key in values.items():
            if bucket.key in by_key:
                setattr(bucket, name, by_key[bucket.key])
    return SimpleNamespace(granularity="month", buckets=buckets)


def test_month_and_week_bars_are_labelled_with_their_month_or_week():
    months = make_buckets(date(2026, 1, 1), date(2026, 3, 31), "month")
    assert [bucket.short_label for bucket in months] == ["Jan 2026", "Feb 2026", "Mar 2026"]
    weeks = make_buckets(date(2026, 1, 5), date(2026, 1, 18), "week")
    assert [bucket.short_label for bucket in weeks] == ["5 Jan", "12 Jan"]
    svg = _svg(pdf.volume_chart(_months(received={"2026-02": {"access/gdpr": 2}}), "received"))
    for label in ("Jan 2026", "Feb 2026", "Mar 2026"):
        assert f">{label}</text>" in svg


def test_days_to_close_with_data_in_one_month_shows_its_values_and_no_data_elsewhere():
    summary = _months(median_days={"2026-02": 12.0}, p90_days={"2026-02": 20.0})
    svg = _svg(pdf.days_chart(summary))
    assert ">12</text>" in svg and ">20</text>" in svg
    assert svg.count(">no data</text>") == 2  # January and March, once each


@pytest.mark.parametrize("value", [0.0, 3.5])
def test_a_single_value_even_zero_days_is_drawn_as_a_labelled_point(value):
    summary = SimpleNamespace(granularity="month", buckets=make_buckets(date(2026, 1, 1), date(2026, 1, 31), "month"))
    summary.buckets[0].median_days = summary.buckets[0].p90_days = value
    svg = _svg(pdf.days_chart(summary))
    shown = f"{value:.0f}" if value.is_integer() else f"{value:.1f}"
    assert svg.count(f">{shown}</text>") >= 2 and "No requests were answered" not in svg


def test_a_period_without_data_says_so():
    empty = _months()
    assert "No requests were answered in this period" in _svg(pdf.days_chart(empty))
    assert "No requests received in this period" in _svg(pdf.volume_chart(empty, "received"))
