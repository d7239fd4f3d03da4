"""The dependency rules of gdpr_requests, checked over the source (``ast``), so they hold without anyone's memory.

1. No import cycle between modules, counting imports inside functions (they run sooner or later too).
2. No cycle between feature packages (notifications -> portal -> notifications), ignoring imports of leaf
   modules: modules that import nothing of the app (requests.states, the HTTP client, crypto) cannot close a
   cycle and are the shared vocabulary the models may use.
3. Services never import a ``tasks`` module: they enqueue by pinned task name (pipeline.enqueue).
4. Faces (views, admin, commands) are imported only by faces and by the wiring that mounts them.
5. The Mixpanel HTTP client and the archive reader import no Django models, directly or through the app.
6. Every task that the settings route or schedule is a registered Celery task.

Each check is a function over an import graph; ``test_each_check_sees_its_violation`` plants one violation per
rule in a throwaway package, so a check that silently stopped looking would fail there.
"""

from __future__ import annotations

import ast
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = "gdpr_requests"

SERVICES = (
    "requests",
    "requests.*",
    "notifications.outbox",
    "notifications.rendering",
    "notifications.staff_alerts",
    "portal.services",
    "staff.services",
    "projects",
    "projects.*",
    "pipeline",
    "pipeline.*",
    "audit",
    "audit.*",
)
NOT_SERVICES = ("requests.tasks", "pipeline.tasks")
FACES = (
    "portal.views",
    "staff.*_admin",
    "staff.site",
    "reports.views",
    "ops.views",
    "management.commands.*",
)
# Modules that mount faces without being one, and why they may import them.
FACE_WIRING = (
    "urls",  # URL confs route to views
    "*.urls",
    "apps",  # AppConfig.ready() wires the app up
    "staff",  # register_models(): puts the model admins on the admin site, called from apps.py
    "ops.middleware",  # answers the probes (/healthz, /readyz, /metrics) ahead of the host check
)
HTTP_ONLY = ("mixpanel.client", "mixpanel.archive")
MODEL_IMPORTS = (f"{APP}.models", f"{APP}.models.*", "django.db", "django.db.*")


@dataclass
class Module:
    name: str  # relative to the app package: "pipeline.steps"; "" is the package itself
    imports: set[str] = field(default_factory=set)  # absolute module names


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(base: Path, app: str = APP) -> dict[str, Module]:
    """{relative module name: Module} for every module of ``base`` (the app's folder), migrations aside."""
    paths = {_module_name(path, base): path for path in sorted(base.rglob("*.py")) if "migrations" not in path.parts}
    known = {f"{app}.{name}" if name else app for name in paths}
    graph = {}
    for name, path in paths.items():
        module = Module(name)
        package = [app, *name.split(".")] if name else [app]
        if path.name != "__init__.py":
            package.pop()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                module.imports.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = package[: len(package) - node.level + 1]
                    target = ".".join([*anchor, node.module] if node.module else anchor)
                else:
                    target = node.module or ""
                for alias in node.names:
                    # `from pkg import submodule` imports the submodule; `from pkg import name`, the package.
                    submodule = f"{target}.{alias.name}"
                    module.imports.add(submodule if submodule in known else target)
        graph[name] = module
    return graph


def _internal(graph: dict[str, Module], module: Module, app: str) -> set[str]:
    """The app modules ``module`` imports, as relative names."""
    found = set()
    for imported in module.imports:
        if imported == app:
            found.add("")
        elif imported.startswith(app + ".") and imported[len(app) + 1 :] in graph:
            found.add(imported[len(app) + 1 :])
    return found


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, or a node importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def module_cycles(graph: dict[str, Module], app: str = APP) -> list[list[str]]:
    return _cycles({name: _internal(graph, module, app) for name, module in graph.items()})


def package_cycles(graph: dict[str, Module], app: str = APP) -> list[list[str]]:
    leaves = {name for name, module in graph.items() if not _internal(graph, module, app)}
    edges: dict[str, set[str]] = {}
    for name, module in graph.items():
        source = name.split(".")[0]
        if not source:
            continue
        for imported in _internal(graph, module, app) - leaves:
            target = imported.split(".")[0]
            if target and target != source:
                edges.setdefault(source, set()).add(target)
    return _cycles(edges)


def services_importing_tasks(graph: dict[str, Module], app: str = APP) -> list[str]:
    return sorted(
        f"{name} imports {imported}"
        for name, module in graph.items()
        if _matches(name, SERVICES) and not _matches(name, NOT_SERVICES)
        for imported in _internal(graph, module, app)
        if imported.rsplit(".", 1)[-1] == "tasks"
    )


def faces_imported_by_non_faces(graph: dict[str, Module], app: str = APP) -> list[str]:
    return sorted(
        f"{name} imports {imported}"
        for name, module in graph.items()
        if not _matches(name, FACES + FACE_WIRING)
        for imported in _internal(graph, module, app)
        if _matches(imported, FACES)
    )


def http_clients_importing_models(graph: dict[str, Module], app: str = APP) -> list[str]:
    """Imports of models or django.db by the HTTP-only modules, or by any app module they import."""
    found = []
    for start in HTTP_ONLY:
        if start not in graph:
            continue
        seen, todo = {start}, [start]
        while todo:
            name = todo.pop()
            for imported in sorted(graph[name].imports):
                if _matches(imported, tuple(p.replace(APP, app) for p in MODEL_IMPORTS)):
                    found.append(f"{start} imports {imported}" + (f" (through {name})" if name != start else ""))
            for nxt in _internal(graph, graph[name], app) - seen:
                seen.add(nxt)
                todo.append(nxt)
    return sorted(found)


def assert_none(violations: list) -> None:
    assert not violations, "\n" + "\n".join(map(str, violations))


@pytest.fixture(scope="module")
def graph() -> dict[str, Module]:
    return import_graph(ROOT / APP)


def test_no_import_cycle_between_modules(graph):
    assert_none(module_cycles(graph))


def test_no_cycle_between_feature_packages(graph):
    assert_none(package_cycles(graph))


def test_services_never_import_a_tasks_module(graph):
    assert_none(services_importing_tasks(graph))


def test_only_faces_and_their_wiring_import_faces(graph):
    assert_none(faces_imported_by_non_faces(graph))


def test_the_mixpanel_http_modules_import_no_models(graph):
    assert_none(http_clients_importing_models(graph))


def test_the_rules_see_every_kind_of_module(graph):
    # A rule whose patterns match nothing (a package renamed) would pass forever.
    for patterns in (SERVICES, FACES, HTTP_ONLY):
        for pattern in patterns:
            assert any(fnmatch.fnmatchcase(name, pattern) for name in graph), f"{pattern!r} matches no module"


def test_every_routed_and_scheduled_task_is_registered():
    from django.conf import settings

    from compliance.celery import app

    app.loader.import_default_modules()
    registered = set(app.tasks)
    routed = {name for name in settings.CELERY_TASK_ROUTES if name != "*"}
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert routed and scheduled
    assert_none(sorted((routed | scheduled) - registered))


# --- the checks themselves, on a throwaway package with one violation each ------------------------------
PLANTED = {
    "module cycle": (
        module_cycles,
        {
            "requests/services.py": "from app.requests import selectors",
            "requests/selectors.py": "import app.requests.services",
        },
    ),
    "module cycle inside a function": (
        module_cycles,
        {"audit/chain.py": "def f():\n    from app.audit import export", "audit/export.py": "from . import chain"},
    ),
    "package cycle": (
        package_cycles,
        {
            "notifications/outbox.py": "from app.portal.services import x\nimport app.requests.states",
            "portal/services.py": "from app.notifications import outbox",
        },
    ),
    "service imports tasks": (services_importing_tasks, {"pipeline/planning.py": "from app.pipeline import tasks"}),
    "service imports tasks in a function": (
        services_importing_tasks,
        {"requests/services.py": "def f():\n    from app.notifications.tasks import send"},
    ),
    "face imported by a service": (
        faces_imported_by_non_faces,
        {"requests/services.py": "from app.portal import views"},
    ),
    "command imported by a service": (
        faces_imported_by_non_faces,
        {"projects/services.py": "from app.management.commands.dsr import Command"},
    ),
    "client imports models": (http_clients_importing_models, {"mixpanel/client.py": "from app.models import Project"}),
    "archive imports django.db": (
        http_clients_importing_models,
        {"mixpanel/archive.py": "from django.db import models"},
    ),
    "client imports models through a helper": (
        http_clients_importing_models,
        {"mixpanel/client.py": "from .ratelimit import hold", "mixpanel/ratelimit.py": "from app import models"},
    ),
}
# Every module the rules name, empty, so the planted files are the only imports.
SKELETON = (
    "models/__init__.py",
    "requests/__init__.py",
    "requests/states.py",
    "requests/tasks.py",
    "notifications/__init__.py",
    "notifications/tasks.py",
    "portal/__init__.py",
    "pipeline/__init__.py",
    "pipeline/tasks.py",
    "audit/__init__.py",
    "projects/__init__.py",
    "mixpanel/__init__.py",
    "management/__init__.py",
    "management/commands/__init__.py",
    "management/commands/dsr.py",
    "portal/views.py",
    "portal/urls.py",
)


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_each_check_sees_its_violation(case, tmp_path):
    check, files = PLANTED[case]
    base = tmp_path / "app"
    base.mkdir()
    (base / "__init__.py").write_text("")
    for relative in SKELETON:
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    clean = import_graph(base, "app")
    assert check(clean, "app") == []
    (base / "portal" / "urls.py").write_text("from app.portal import views")  # wiring: allowed
    for relative, source in files.items():
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source + "\n")
    assert check(import_graph(base, "app"), "app") != []
