"""PDF rendering (ReportLab) of the compliance summary and the evidence pack, and the charts they share.

- Fonts: DejaVu, embedded (subset) so non-Latin text renders (Łódź, Ωμέγα; 東京 with the CJK fallback font);
  without the fonts the renderer raises PdfFontsMissing naming the Debian package to install.
- Data is drawn as text, never read as Paragraph markup (``base.escape_text``).
- ``deterministic=True`` fixes the creation date and the document id, so two renders of the same data are
  byte-identical.
- Charts are ReportLab drawings; the HTML page shows the same drawings as SVG (``chart_svg_data_uri``).
"""

from __future__ import annotations

from gdpr_requests.reports.pdf.base import FALLBACK_FONT, PdfFontsMissing, has_fallback_font, register_fonts
from gdpr_requests.reports.pdf.charts import chart_svg_data_uri, days_chart, summary_charts, volume_chart
from gdpr_requests.reports.pdf.evidence import render_evidence_pdf
from gdpr_requests.reports.pdf.summary import render_summary_pdf

__all__ = [
    "FALLBACK_FONT",
    "PdfFontsMissing",
    "chart_svg_data_uri",
    "days_chart",
    "has_fallback_font",
    "register_fonts",
    "render_evidence_pdf",
    "render_summary_pdf",
    "summary_charts",
    "volume_chart",
]
