"""Every public selector has a reader: a selector nobody calls is dead code that still looks like a contract."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gdpr_requests.requests import selectors

ROOT = Path(selectors.__file__).resolve().parents[2]
SOURCES = ["gdpr_requests", "templates", "benchmarks", "mixpanel_sandbox", "compliance"]


def _public_functions() -> list[str]:
    tree = ast.parse(Path(selectors.__file__).read_text())
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]


def test_every_public_selector_is_called_somewhere():
    text = "\n".join(
        path.read_text(errors="replace")
        for folder in SOURCES
        for path in (ROOT / folder).rglob("*")
        if path.suffix in {".py", ".html", ".txt"}
    )
    # Its own ``def`` is one mention; a caller (here or in another module) makes a second.
    unused = [name for name in _public_functions() if len(re.findall(rf"\b{name}\b", text)) < 2]
    assert unused == []
