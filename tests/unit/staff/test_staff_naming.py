"""In the staff admin, ``request`` is always the HttpRequest; a DataSubjectRequest is ``dsr`` (or ``obj`` where
Django names it), so that a reader never has to guess which one a line touches."""

from __future__ import annotations

import ast
from pathlib import Path

import gdpr_requests.staff

STAFF_DIR = Path(gdpr_requests.staff.__file__).parent


def _arguments(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                yield node, arg


def test_every_argument_named_request_is_an_http_request():
    offenders = []
    for module in sorted(STAFF_DIR.glob("*.py")):
        for node, arg in _arguments(ast.parse(module.read_text(), filename=str(module))):
            if arg.arg != "request":
                continue
            annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
            if annotation not in ("HttpRequest", "HttpRequest | None"):
                offenders.append(f"{module.name}:{node.lineno} request: {annotation or '(unannotated)'}")
    assert offenders == []
