"""The API and webhook packages keep the house's layers: faces -> services -> models, the HTTP transport
imports no models, and nothing but a tasks module imports a tasks module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3] / "gdpr_requests"
MODULES = sorted([*ROOT.glob("api/*.py"), *ROOT.glob("webhooks/*.py")])


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_only_tasks_modules_import_tasks_and_nobody_imports_a_face(path):
    imported = imports_of(path)
    if path.name != "tasks.py":
        assert not [name for name in imported if name.endswith(".tasks")], "enqueue by pinned task name instead"
    faces = {"gdpr_requests.api.views", "gdpr_requests.api.admin", "gdpr_requests.webhooks.admin"}
    if path.name not in {"urls.py", "admin.py"}:
        assert not imported & faces


@pytest.mark.parametrize("name", ["transport.py", "addresses.py", "signing.py"])
def test_the_http_side_of_webhooks_imports_no_models(name):
    imported = imports_of(ROOT / "webhooks" / name)
    assert not [module for module in imported if module.startswith(("gdpr_requests.models", "django.db"))]


def test_webhook_services_do_not_depend_on_the_api():
    assert not [m for m in imports_of(ROOT / "webhooks" / "services.py") if m.startswith("gdpr_requests.api")]
