"""What the public side asks to translate, read from the source the way makemessages reads it, and the catalogs.

Without GNU gettext (CI has none): the templates go through Django's own ``templatize`` (what makemessages feeds
to xgettext) and the gettext calls in its output are read with Python's tokenizer; the Python modules are read
with ``ast``. The committed ``.mo`` files are read with polib and compared with their ``.po``.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path

import polib
from django.conf import settings
from django.utils.translation.template import templatize

ROOT = Path(settings.BASE_DIR)
LOCALE_DIR = ROOT / "locale"
# Everything a data subject sees: the portal, the emails, and the strings their code builds.
TEMPLATE_DIRS = [ROOT / "templates" / "portal", ROOT / "templates" / "emails"]
PYTHON_MODULES = [
    *sorted((ROOT / "gdpr_requests" / "portal").glob("*.py")),
    ROOT / "gdpr_requests" / "notifications" / "rendering.py",
]
# English is the source language: it has no catalog.
TRANSLATED = [code for code, _name in settings.LANGUAGES if code != "en"]

SINGULAR = {"gettext", "gettext_lazy", "_", "gettext_noop"}
PLURAL = {"ngettext", "ngettext_lazy"}
CONTEXT = {"pgettext", "pgettext_lazy"}
CONTEXT_PLURAL = {"npgettext", "npgettext_lazy"}
KEYWORDS = SINGULAR | PLURAL | CONTEXT | CONTEXT_PLURAL


@dataclass(frozen=True)
class Message:
    msgid: str
    context: str | None = None
    plural: str | None = None
    where: str = ""

    @property
    def key(self) -> tuple[str | None, str]:
        return self.context, self.msgid


def _message(name: str, args: list[str], where: str) -> Message | None:
    if name in SINGULAR and len(args) >= 1:
        return Message(args[0], where=where)
    if name in PLURAL and len(args) >= 2:
        return Message(args[0], plural=args[1], where=where)
    if name in CONTEXT and len(args) >= 2:
        return Message(args[1], context=args[0], where=where)
    if name in CONTEXT_PLURAL and len(args) >= 3:
        return Message(args[1], context=args[0], plural=args[2], where=where)
    return None


def messages_in_template(path: Path) -> list[Message]:
    """The messages of one template: templatize it, then read the gettext calls of its output."""
    code = templatize(path.read_text(encoding="utf-8"), origin=str(path))
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type != tokenize.NL]
    found = []
    for index, token in enumerate(tokens):
        if token.type != tokenize.NAME or token.string not in KEYWORDS:
            continue
        if index + 1 >= len(tokens) or tokens[index + 1].string != "(":
            continue
        args: list[str] = []
        for following in tokens[index + 2 :]:
            if following.type == tokenize.STRING:
                args.append(ast.literal_eval(following.string))
            elif following.string != ",":
                break
        message = _message(token.string, args, f"{path.relative_to(ROOT)}:{token.start[0]}")
        if message is not None:
            found.append(message)
    return found


def messages_in_module(path: Path) -> list[Message]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if name not in KEYWORDS:
            continue
        args = [arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
        message = _message(name, args, f"{path.relative_to(ROOT)}:{node.lineno}")
        if message is not None:
            found.append(message)
    return found


def public_templates() -> list[Path]:
    return sorted(path for folder in TEMPLATE_DIRS for path in folder.rglob("*") if path.suffix in {".html", ".txt"})


def source_messages() -> dict[tuple[str | None, str], Message]:
    found: dict[tuple[str | None, str], Message] = {}
    for path in public_templates():
        for message in messages_in_template(path):
            found.setdefault(message.key, message)
    for path in PYTHON_MODULES:
        for message in messages_in_module(path):
            found.setdefault(message.key, message)
    return found


def po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / "django.po"


def catalog(language: str) -> polib.POFile:
    return polib.pofile(str(po_path(language)))


def translations(entries: list) -> dict[tuple[str | None, str], tuple[str, ...]]:
    """(context, msgid) -> its translation(s), for the entries of a .po or a .mo (header left out)."""
    table = {}
    for entry in entries:
        if not entry.msgid or entry.obsolete:
            continue
        if entry.msgid_plural:
            forms = tuple(entry.msgstr_plural[index] for index in sorted(entry.msgstr_plural, key=int))
        else:
            forms = (entry.msgstr,)
        table[(entry.msgctxt or None, entry.msgid)] = forms
    return table
