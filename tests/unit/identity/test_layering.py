"""The identity package keeps the project's dependency direction: the HTTP client imports no Django, nothing but
Celery's loader imports a tasks module, and services never import a face (admin, CLI, commands)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "gdpr_requests" / "identity"
FACES = ("gdpr_requests.identity.admin", "gdpr_requests.management")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_query_client_imports_no_django_and_no_models() -> None:
    imported = _imports(ROOT / "gdpr_requests" / "mixpanel" / "query_client.py")
    assert not [name for name in imported if name.startswith(("django", "gdpr_requests"))]


def test_no_identity_module_imports_a_tasks_module_and_services_import_no_face() -> None:
    for path in PACKAGE.glob("*.py"):
        imported = _imports(path)
        assert not [n for n in imported if n.endswith(".tasks") or ".tasks." in n], path.name
        if path.stem in ("services", "resolution", "query_limiter", "hooks", "alerts"):
            assert not [n for n in imported if n.startswith(FACES)], path.name
