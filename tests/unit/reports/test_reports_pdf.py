"""The PDFs: they parse, carry the expected text (non-Latin too), draw markup as text, and render deterministically."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from PIL import Image, ImageChops, ImageStat
from pypdf import PdfReader

from gdpr_requests.models import MixpanelTask, TaskRequestLink
from gdpr_requests.reports import build_evidence_pack, build_summary, pdf
from gdpr_requests.requests import services
from gdpr_requests.requests.exports import export_store
from tests.conftest import need
from tests.unit.reports import test_reports_summary
from tests.unit.reports.test_reports_summary import EXTENSION_REASON, NOW, PERIOD

pytestmark = pytest.mark.django_db

dataset = test_reports_summary.dataset  # the hand-computed data set (a fixture)

# Where the PNG test leaves its pages (REPORTS_LOOK_DIR overrides, e.g. to keep them out of a shared tree).
RESULTS = Path(os.environ.get("REPORTS_LOOK_DIR") or Path(__file__).resolve().parents[3] / "test-results")


def _text(content: bytes) -> str:
    reader = PdfReader(io.BytesIO(content))
    # Table cells wrap; join the lines so that a phrase split over two lines is still found.
    return " ".join(" ".join((page.extract_text() or "").split()) for page in reader.pages)


def _summary():
    return build_summary(start=PERIOD[0], end=PERIOD[1], now=NOW, generated_by="aud")


@pytest.fixture
def evidence_request(make_request, staff_actor, project):
    """A completed access request with a Mixpanel task, its remote status history and an exported file."""
    received = datetime(2025, 1, 6, 10, tzinfo=UTC)
    with time_machine.travel(received, tick=False):
        dsr = make_request(
            kind="access",
            name="Zoë Ωμέγα 東京",
            email="zoe@example.org",
            received_at=received,
            distinct_ids=["secret-distinct-id-1"],
        )
        services.request_record_identity(request=dsr, how="passport", actor=staff_actor)
        services.request_approve(request=dsr, actor=staff_actor)
        task = MixpanelTask.objects.create(
            project=project,
            kind="retrieval",
            compliance_type="GDPR",
            distinct_ids=["secret-distinct-id-1"],
            tracking_id="trk-123456789",
            remote_status="SUCCESS",
            status_history=[
                {"status": "PENDING", "at": "2025-01-06T10:00:05+00:00"},
                {"status": "STARTED", "at": "2025-01-06T10:05:00+00:00"},
                {"status": "SUCCESS", "at": "2025-01-06T10:20:00+00:00"},
            ],
            requesting_user="gdpr-owner@company.example",
            state="succeeded",
        )
        TaskRequestLink.objects.create(task=task, request=dsr)
        services.request_start_processing(request=dsr, task_count=1)
        export = export_store(request=dsr, content=b"PK fake zip", task=task)
        services.request_complete(request=dsr)
    return dsr, export


def test_the_summary_pdf_parses_and_shows_the_builders_numbers_and_non_latin_text(dataset):
    summary = _summary()
    text = _text(pdf.render_summary_pdf(summary))
    assert "Compliance summary" in text
    for label, value in summary.key_figures():
        assert label in text and value in text, (label, value)
    assert "85.7% (6 of 7)" in text
    assert dataset["R7"].reference in text  # the overdue request
    assert "Łódź offices (Ωμέγα system)" in text  # drawn with the embedded DejaVu font
    assert "Identity not confirmed" in text
    assert "trk-bad-2" in text


def test_chinese_and_japanese_text_is_drawn_with_the_fallback_font(dataset):
    need(pdf.has_fallback_font(), "needs a CJK font: apt-get install fonts-droid-fallback")
    content = pdf.render_summary_pdf(_summary())
    assert EXTENSION_REASON in _text(content)
    fonts = {
        str(f.get_object()["/BaseFont"])
        for p in PdfReader(io.BytesIO(content)).pages
        for f in p["/Resources"]["/Font"].values()
    }
    assert any(pdf.FALLBACK_FONT in name for name in fonts), fonts


def test_the_pdf_embeds_dejavu_subsets(dataset):
    reader = PdfReader(io.BytesIO(pdf.render_summary_pdf(_summary())))
    fonts = {str(font.get_object()["/BaseFont"]) for font in reader.pages[0]["/Resources"]["/Font"].values()}
    assert any("DejaVuSans" in name for name in fonts), fonts
    assert not any(name.endswith(("Helvetica", "Times-Roman")) for name in fonts)


def test_two_deterministic_renders_are_byte_identical_and_undated(dataset, evidence_request):
    summary = _summary()
    first, second = (
        pdf.render_summary_pdf(summary, deterministic=True),
        pdf.render_summary_pdf(summary, deterministic=True),
    )
    assert first == second
    pack = build_evidence_pack(reference=evidence_request[0].reference, now=NOW)
    assert pdf.render_evidence_pdf(pack, deterministic=True) == pdf.render_evidence_pdf(pack, deterministic=True)
    # Without the option the creation date is today's, so the bytes carry it (and would differ over time).
    assert b"D:2000" in first
    assert b"D:2000" not in pdf.render_summary_pdf(summary)


def test_text_that_looks_like_markup_is_drawn_as_text(make_request, staff_actor):
    reason = '<b>bold</b> & <font color="red">red</font> <unclosed a="1'
    dsr = make_request()
    services.request_reject(request=dsr, reason=reason, actor=staff_actor)
    today = datetime.now(UTC).date()
    text = _text(pdf.render_summary_pdf(build_summary(start=today, end=today)))
    assert reason in text


def test_the_evidence_pdf_has_the_facts_tasks_history_export_and_chain_but_no_personal_data(evidence_request):
    dsr, export = evidence_request
    pack = build_evidence_pack(reference=dsr.reference, generated_by="aud")
    text = _text(pdf.render_evidence_pdf(pack))
    assert dsr.reference in text
    assert dsr.email_hash[:16] in text
    for expected in ("trk-123456789", "PENDING", "STARTED", "SUCCESS", "gdpr-owner@company.example", export.sha256):
        assert expected in text
    assert pack["chain"]["head_hash"] in text.replace(" ", "")
    assert "request.approve" in text and "request.complete" in text
    for secret in ("zoe@example.org", "Zoë", "Ωμέγα", "secret-distinct-id-1", "passport"):
        assert secret not in text


def test_the_evidence_timeline_tells_the_events_in_the_staff_timelines_sentences(evidence_request):
    dsr, _export = evidence_request
    pack = build_evidence_pack(reference=dsr.reference, generated_by="aud")
    timeline_page = _text(pdf.render_evidence_pdf(pack)).split("Timeline (", 1)[1].split("Mixpanel tasks", 1)[0]
    assert "Approved by alice" in timeline_page and "Completed" in timeline_page
    assert [e["sequence"] for e in pack["timeline_readable"]] == [e["sequence"] for e in pack["timeline"]]
    assert "request.approve" not in timeline_page  # codes stay in the hashed-events section, not the story


def test_missing_fonts_give_a_clear_error(settings, monkeypatch, tmp_path, dataset):
    settings.REPORTS_FONT_DIR = str(tmp_path)
    monkeypatch.setattr(pdf.base, "_fonts_ready", False)
    with pytest.raises(pdf.PdfFontsMissing, match="apt-get install fonts-dejavu-core"):
        pdf.render_summary_pdf(_summary())


def _need_poppler() -> None:
    missing = [tool for tool in ("pdftoppm", "pdftotext") if shutil.which(tool) is None]
    need(not missing, f"needs {' and '.join(missing)} (Debian poppler-utils)")


def _page_text(source: Path, page: int) -> str:
    result = subprocess.run(
        ["pdftotext", "-f", str(page), "-l", str(page), str(source), "-"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return " ".join(result.stdout.decode().split())


def _share_of_pixels(image: Image.Image, test: Callable[[int], bool]) -> float:
    """The share of a one-band image's pixels whose value passes ``test``."""
    histogram = image.histogram()
    return sum(count for value, count in enumerate(histogram) if test(value)) / (image.width * image.height)


def _share_in_colour(image: Image.Image, colour: str, tolerance: int = 12) -> float:
    """The share of pixels within ``tolerance`` of ``colour`` on every channel (a chart's bars, not its text)."""
    rgb = image.convert("RGB")
    difference = ImageChops.difference(rgb, Image.new("RGB", rgb.size, colour))
    within = [band.point(lambda value: 255 if value <= tolerance else 0) for band in difference.split()]
    mask = ImageChops.multiply(ImageChops.multiply(within[0], within[1]), within[2])
    return _share_of_pixels(mask, lambda value: value == 255)


def test_every_page_renders_with_its_sections_figures_and_charts(dataset, evidence_request):
    """Renders each page to test-results/reports-<name>-<page>.png (CI keeps them as artefacts: open them to see
    the layout) and checks what a reader would find there: the page count, each page's headings and figures as
    pdftotext reads them, "Page n of N", ink on every page, and chart bars in the chart colours."""
    _need_poppler()
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = _summary()
    dsr, export = evidence_request
    pack = build_evidence_pack(reference=dsr.reference, generated_by="aud", now=NOW)
    expected = {
        "summary": (
            pdf.render_summary_pdf(summary),
            f"{summary.organisation} · Compliance summary · {summary.period_label}",
            [
                [
                    "Compliance summary",
                    *(text for figure in summary.key_figures() for text in figure),
                    "Requests received per week",
                    "Requests closed per week",
                ],
                [
                    "Per week: received / closed by kind and regulation",
                    "Closed in the period by outcome: Completed 5, Rejected 3, Cancelled 1, Expired 0",
                    "Time to close and deadlines",
                    "Days to close per week (answered requests)",
                    "Answered late (1)",
                    f"{dataset['R4'].reference} GDPR 2024-12-20 2025-01-15 26",
                    "Open requests now: 2, of which overdue: 1",
                    f"{dataset['R7'].reference} Deletion CCPA On hold 2024-10-01 2024-11-15 73 days",
                    "Extensions in the period (1)",
                    "Rejections by reason (3)",
                    "Identity not confirmed 2",
                ],
                [
                    "Mixpanel tasks created in the period",
                    "Failed, paused or needing attention (1)",
                    "trk-bad-2",
                    "Calls to Mixpanel in the period: 4, without a 2xx answer: 2",
                    "Mixpanel credentials",
                ],
            ],
        ),
        "evidence": (
            pdf.render_evidence_pdf(pack),
            f"{pack['organisation']} · Evidence pack · {dsr.reference}",
            [
                ["Evidence pack", "The request", "Chain", "all match", f"Timeline ({len(pack['timeline'])} events)"],
                [
                    "Mixpanel tasks (1)",
                    "trk-123456789",
                    "Remote status history",
                    "Exported file",
                    export.sha256,
                    "Audit events and their hashes",
                    "How to check this pack",
                ],
            ],
        ),
    }
    for name, (content, running_head, pages) in expected.items():
        source = RESULTS / f"reports-{name}.pdf"
        source.write_bytes(content)
        for stale in RESULTS.glob(f"reports-{name}-*.png"):
            stale.unlink()
        subprocess.run(
            ["pdftoppm", "-png", "-r", "60", str(source), str(RESULTS / f"reports-{name}")], check=True, timeout=60
        )
        images = sorted(RESULTS.glob(f"reports-{name}-*.png"))
        assert len(PdfReader(io.BytesIO(content)).pages) == len(images) == len(pages), name
        for number, (image_path, headings) in enumerate(zip(images, pages, strict=True), start=1):
            text = _page_text(source, number)
            for heading in [running_head, *headings, f"Page {number} of {len(pages)}"]:
                assert heading in text, (name, number, heading)
            page = Image.open(image_path).convert("L")
            # A blank page is all white; one with only the running head and footer has well under 1% ink.
            assert ImageStat.Stat(page).stddev[0] > 10, (name, number)
            assert _share_of_pixels(page, lambda value: value < 200) > 0.01, (name, number)
    summary_pages = sorted(RESULTS.glob("reports-summary-*.png"))
    # The stacked bars of the volume charts (page 1) and the 90th-percentile bars (page 2), not just legend swatches.
    assert _share_in_colour(Image.open(summary_pages[0]), "#60a5fa") > 0.005
    assert _share_in_colour(Image.open(summary_pages[1]), "#93c5fd") > 0.005


def test_chart_svg_for_the_html_page_is_a_data_uri_of_an_svg(dataset):
    import base64

    uri = pdf.chart_svg_data_uri(pdf.volume_chart(_summary(), "received"))
    assert uri.startswith("data:image/svg+xml;base64,")
    svg = base64.b64decode(uri.split(",", 1)[1]).decode()
    assert "<svg" in svg and "Requests received per week" in svg
