"""Every text a data subject reads in a portal page or an email is marked for translation.

The templates are split with Django's own Lexer: text outside {% translate %} / {% blocktranslate %} that still
has letters once the HTML tags, entities and template tags are taken out is text nobody can translate. Human text
in attributes (alt, title, aria-label, placeholder) counts too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.template.base import Lexer, TokenType

from tests.unit.i18n import catalogs

TAG = re.compile(r"<!--.*?-->|<[^>]*>", re.S)
ENTITY = re.compile(r"&#?\w+;")
LETTERS = re.compile(r"[^\W\d_]{2,}")
HUMAN_ATTRIBUTE = re.compile(r"""\b(?:alt|title|aria-label|placeholder)\s*=\s*["']([^"']*)["']""")
PLACEHOLDER = "\x00"
# Blocks whose content is a value for the browser, not words for a person ({% block referrer %}no-referrer).
MACHINE_BLOCKS = {"referrer"}


def untranslated_text(source: str) -> list[str]:
    """The pieces of ``source`` with words in them that are not inside a translation tag."""
    kept: list[str] = []
    depth = 0
    machine = False
    for token in Lexer(source).tokenize():
        if token.token_type == TokenType.BLOCK:
            bits = token.contents.split()
            name = bits[0] if bits else ""
            if name in {"blocktranslate", "blocktrans"}:
                depth += 1
            elif name in {"endblocktranslate", "endblocktrans"}:
                depth -= 1
            elif name == "block":
                machine = len(bits) > 1 and bits[1] in MACHINE_BLOCKS
            elif name == "endblock":
                machine = False
            kept.append(PLACEHOLDER)
        elif token.token_type == TokenType.TEXT and depth == 0 and not machine:
            kept.append(token.contents)
        elif depth == 0:
            kept.append(PLACEHOLDER)
    text = "".join(kept)
    problems = [value for value in HUMAN_ATTRIBUTE.findall(text) if LETTERS.search(value.replace(PLACEHOLDER, ""))]
    text = ENTITY.sub(" ", TAG.sub(PLACEHOLDER, text))
    problems += [piece.strip() for piece in text.split(PLACEHOLDER) if LETTERS.search(piece)]
    return problems


@pytest.mark.parametrize("path", catalogs.public_templates(), ids=lambda path: f"{path.parent.name}/{path.name}")
def test_no_text_in_a_public_template_escapes_translation(path: Path):
    assert untranslated_text(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "<p>Hello {{ name }}</p>",
        "{% load i18n %}<h1>{% translate 'Title' %}</h1> Welcome",
        '<img src="x.png" alt="A picture">',
        "{% if a %}Reference {{ ref }}{% endif %}",
    ],
)
def test_the_check_flags_text_outside_translation(source):
    assert untranslated_text(source)


@pytest.mark.parametrize(
    "source",
    [
        '{% load i18n %}<p class="lead">{% translate "Hello" %}</p>',
        "{% load i18n %}{% blocktranslate %}Hello {{ name }}, <b>welcome</b>{% endblocktranslate %}",
        '<a href="mailto:{{ email }}" style="color:#2d4fc4;">{{ email }}</a> · -- &nbsp;',
        '<!doctype html><html lang="{{ LANGUAGE_CODE }}"></html>',
    ],
)
def test_the_check_leaves_markup_and_marked_text_alone(source):
    assert untranslated_text(source) == []
