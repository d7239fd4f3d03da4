"""The catalogs cover every message of the public side, in every language, and the compiled .mo files match."""

from __future__ import annotations

import re

import polib
import pytest

from tests.unit.i18n import catalogs

PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|\{\w+\}")


def test_the_source_has_the_messages_the_reader_is_meant_to_find():
    # A reader that silently found nothing would make every check below pass.
    found = catalogs.source_messages()
    assert len(found) > 250
    assert (None, "Make a privacy request") in found  # a {% translate %} in a portal template
    assert (None, "We will answer by %(date)s.") in found  # a {% blocktranslate %} in an email
    assert found[(None, "The link works for %(hours)s hour.")].plural == "The link works for %(hours)s hours."
    assert ("your request for ...", "a copy of your data") in found  # pgettext_lazy in rendering.py
    assert (None, "Enter your email address.") in found  # a form's error message


@pytest.mark.parametrize("language", catalogs.TRANSLATED)
def test_every_public_message_is_translated_and_none_is_fuzzy(language):
    po = catalogs.catalog(language)
    entries = {(entry.msgctxt or None, entry.msgid): entry for entry in po if not entry.obsolete}
    problems = []
    for key, message in sorted(catalogs.source_messages().items(), key=lambda item: item[1].where):
        entry = entries.get(key)
        if entry is None:
            problems.append(f"missing: {message.msgid!r} ({message.where})")
            continue
        if "fuzzy" in entry.flags:
            problems.append(f"fuzzy: {message.msgid!r}")
        forms = list(entry.msgstr_plural.values()) if entry.msgid_plural else [entry.msgstr]
        if not all(form.strip() for form in forms):
            problems.append(f"untranslated: {message.msgid!r}")
    assert not problems, f"{language}: run makemessages and translate (locale/README.md):\n" + "\n".join(problems)
    assert not po.metadata_is_fuzzy, f"{language}: the catalog header is marked fuzzy"


@pytest.mark.parametrize("language", catalogs.TRANSLATED)
def test_translations_keep_every_placeholder_of_the_english(language):
    problems = []
    for entry in catalogs.catalog(language).translated_entries():
        sources = [entry.msgid, entry.msgid_plural] if entry.msgid_plural else [entry.msgid]
        expected = set(PLACEHOLDER.findall(sources[0])) | set(PLACEHOLDER.findall(sources[-1]))
        forms = list(entry.msgstr_plural.values()) if entry.msgid_plural else [entry.msgstr]
        for form in forms:
            if set(PLACEHOLDER.findall(form)) != expected:
                problems.append(f"{entry.msgid!r} -> {form!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("language", catalogs.TRANSLATED)
def test_the_committed_mo_says_exactly_what_its_po_says(language):
    # Compared by content, not by file times (a git checkout gives both files the same time).
    po = catalogs.catalog(language)
    mo_path = catalogs.po_path(language).with_suffix(".mo")
    assert mo_path.exists(), f"{mo_path} is missing: run manage.py compilemessages"
    mo = polib.mofile(str(mo_path))
    expected = catalogs.translations([entry for entry in po if "fuzzy" not in entry.flags and entry.translated()])
    compiled = catalogs.translations(list(mo))
    stale = sorted(
        msgid for key, forms in expected.items() if compiled.get(key) != forms for _ctx, msgid in [key]
    ) + sorted(msgid for key in compiled.keys() - expected.keys() for _ctx, msgid in [key])
    assert not stale, f"{mo_path} does not match its .po: run manage.py compilemessages -i .venv\n" + "\n".join(
        stale[:20]
    )
    assert mo.metadata.get("Plural-Forms") == po.metadata.get("Plural-Forms")


def test_the_reader_notices_a_missing_message(tmp_path, monkeypatch):
    # The check above, planted with a catalog that lacks one message, must fail.
    po = catalogs.catalog("de")
    po.remove(next(entry for entry in po if entry.msgid == "Make a privacy request"))
    planted = tmp_path / "de" / "LC_MESSAGES" / "django.po"
    planted.parent.mkdir(parents=True)
    po.save(str(planted))
    monkeypatch.setattr(catalogs, "LOCALE_DIR", tmp_path)
    with pytest.raises(AssertionError, match="missing: 'Make a privacy request'"):
        test_every_public_message_is_translated_and_none_is_fuzzy("de")


def test_the_mo_check_notices_a_mo_compiled_before_the_last_change(tmp_path, monkeypatch):
    po = catalogs.catalog("de")
    folder = tmp_path / "de" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    po.save_as_mofile(str(folder / "django.mo"))
    next(entry for entry in po if entry.msgid == "Send request").msgstr = "Antrag absenden"
    po.save(str(folder / "django.po"))
    monkeypatch.setattr(catalogs, "LOCALE_DIR", tmp_path)
    with pytest.raises(AssertionError, match="Send request"):
        test_the_committed_mo_says_exactly_what_its_po_says("de")
