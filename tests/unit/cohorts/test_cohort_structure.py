"""The cohort package keeps the project's layering: faces (views, admin, commands) use services, services use
models, nobody imports a face or a tasks module, and the message parser touches no database."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "gdpr_requests" / "cohorts"
FACES = {"gdpr_requests.cohorts.views", "gdpr_requests.cohorts.admin", "gdpr_requests.cohorts.urls"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", sorted(p.name for p in PACKAGE.glob("*.py")))
def test_no_module_imports_a_face_or_a_tasks_module(module):
    names = imported(PACKAGE / module)
    assert not {n for n in names if n.endswith(".tasks") or ".tasks." in n}
    if f"gdpr_requests.cohorts.{module[:-3]}" not in FACES:
        assert not names & FACES


def test_the_message_parser_touches_no_database():
    names = imported(PACKAGE / "messages.py")
    assert not {n for n in names if n.startswith("django.db")}
    assert "gdpr_requests.cohorts.services" not in names
