"""Table cells in the PDFs wrap codes such as export.code_requested between their parts, never mid-word."""

from __future__ import annotations

import pytest
from reportlab.platypus import Paragraph

from gdpr_requests.reports.pdf import base


@pytest.fixture
def styles():
    base.register_fonts()
    return base.paragraph_styles()


def _lines(paragraph: Paragraph, width: float) -> list[str]:
    paragraph.wrap(width, 10_000)
    lines = []
    for line in paragraph.blPara.lines:
        words = line[1] if isinstance(line, tuple) else [w.text for w in line.words]
        lines.append(" ".join(words).strip())
    return lines


@pytest.mark.parametrize("code", ["export.code_requested", "request.identity_recorded", "mixpanel_task.status_changed"])
def test_a_code_too_wide_for_its_cell_wraps_after_a_dot_or_underscore(styles, code):
    width = 48  # narrower than the code: it must wrap
    lines = _lines(base.cell_para(code, styles["cell"], width), width)
    assert len(lines) > 1 and "".join(lines) == code
    for line in lines[:-1]:
        assert line[-1] in "._", lines


def test_data_table_cells_wrap_codes_at_their_column_width(styles):
    # The Action column of a five-column table like the evidence timeline: a seventh of the page.
    table = base.data_table(["#", "Action"], [[1, "mixpanel_task.status_changed"]], [8.5, 1.5], styles=styles)
    cell = table._cellvalues[1][1]
    lines = _lines(cell, table._colWidths[1] - 8)
    assert len(lines) > 1 and all(line[-1] in "._" for line in lines[:-1]), lines


def test_words_that_fit_and_ordinary_text_are_left_alone(styles):
    text = "Identity checked by passport"
    assert base.break_long_tokens(text, styles["cell"], 60) == text
    assert base.break_long_tokens("export.code_requested", styles["cell"], 500) == "export.code_requested"
