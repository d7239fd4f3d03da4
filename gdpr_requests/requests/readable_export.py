"""The readable part of an access export: ``index.html``, ``README.txt`` and one HTML page per data file.

Mixpanel's files are raw JSON (Unix times, ``$insert_id``, tracking ids). Next to them the subject's ZIP gets:

- ``README.txt``: who holds the data, what was searched and when, what each file holds, and the information
  GDPR Art. 15 asks for (purposes, recipients, retention, source, the right to complain) from the
  ``DSR_ART15_*`` settings the organisation fills in;
- ``index.html``: the same, linking to ``readable/…`` pages that show the events as a table (event, local time,
  the main properties) and profile properties as a list, at most ROWS_PER_PAGE rows a page, so that a large
  export never becomes one page of a million rows.

The pages hold no script and load nothing: they open offline in any browser. Every value from the data is
HTML-escaped (the data came from a product anyone can send events to).
"""

from __future__ import annotations

import html
import json
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings

README = "README.txt"
INDEX = "index.html"
PAGES_DIR = "readable/"
ROWS_PER_PAGE = 500
# Properties shown for each event, beyond its name and time: the ones a person recognises first.
MAIN_PROPERTIES = 6

# Mixpanel's technical properties: they say nothing about the person a reader would recognise.
TECHNICAL_PROPERTIES = frozenset(
    {
        "time",
        "distinct_id",
        "$distinct_id",
        "$insert_id",
        "$user_id",
        "$device_id",
        "$distinct_id_before_identity",
        "$mp_api_endpoint",
        "$mp_api_timestamp_ms",
        "mp_processing_time_ms",
        "$lib_version",
        "mp_lib",
        "$mp_event_size",
        "token",
        "$import",
    }
)
FRIENDLY_NAMES = {
    "$browser": "Browser",
    "$browser_version": "Browser version",
    "$os": "Operating system",
    "$device": "Device",
    "$model": "Device model",
    "$manufacturer": "Device maker",
    "$city": "City",
    "$region": "Region",
    "mp_country_code": "Country",
    "$country_code": "Country",
    "$current_url": "Page",
    "$referrer": "Came from",
    "$referring_domain": "Came from (site)",
    "$screen_width": "Screen width",
    "$screen_height": "Screen height",
    "$app_version_string": "App version",
    "$created": "Profile created",
    "$last_seen": "Last seen",
    "$email": "Email",
    "$name": "Name",
    "$first_name": "First name",
    "$last_name": "Last name",
    "$phone": "Phone",
    "$timezone": "Time zone",
}
FILE_DESCRIPTIONS = {
    "events.json": "The events recorded when you used our product: what you did and when, with details such as "
    "your device, browser and approximate location.",
    "profiles.json": "Your user profile: the properties stored about you.",
    "people.json": "Your user profile: the properties stored about you.",
    "manifest.json": "Mixpanel's technical description of this export (which files it holds, when it was made).",
    "categories.json": "The categories of personal information held about you.",
    "sources.json": "The sources the personal information came from.",
    "data.json": "The data as Mixpanel sent it.",
}
DEFAULTS = {
    "DSR_ART15_COMPLAINT": "You have the right to lodge a complaint with a data protection supervisory authority, "
    "in particular in the country where you live or work, or where you think your rights were infringed.",
}
ART15_ITEMS = (
    ("DSR_ART15_PURPOSES", "Why we process this data (purposes)"),
    ("DSR_ART15_RECIPIENTS", "Who receives it (recipients)"),
    ("DSR_ART15_RETENTION", "How long we keep it"),
    ("DSR_ART15_SOURCE", "Where it comes from"),
    ("DSR_ART15_COMPLAINT", "Your right to complain"),
)

_STYLE = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;margin:0;background:#fff}
main{max-width:70rem;margin:0 auto;padding:1.5rem}
h1{font-size:1.6rem;margin:.2rem 0 1rem}h2{font-size:1.2rem;margin:2rem 0 .5rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;vertical-align:top;
padding:.35rem .5rem;border-bottom:1px solid #e5e7eb}th{background:#f3f4f6}
dl{display:grid;grid-template-columns:minmax(8rem,16rem) 1fr;gap:.25rem 1rem}dt{font-weight:600}dd{margin:0}
.muted{color:#6b7280}nav a{margin-right:1rem}pre{white-space:pre-wrap;word-break:break-word;background:#f9fafb;
padding:1rem}code{word-break:break-all}
"""


def is_generated(name: str) -> bool:
    """True for the files this module writes (they are made again whenever the export changes)."""
    return name in {README, INDEX} or name.startswith(PAGES_DIR)


@dataclass
class _FileSummary:
    name: str
    description: str
    rows: int
    pages: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExportFacts:
    """What the readable files say about the export as a whole."""

    reference: str
    projects: Sequence[str]
    prepared_at: datetime


def add_readable_files(archive: zipfile.ZipFile, facts: ExportFacts) -> None:
    """Write the readable files into ``archive`` (opened in "a" mode) from the data files it already holds."""
    names = [info.filename for info in archive.infolist() if not info.is_dir() and not is_generated(info.filename)]
    if not facts.projects:  # a request for every project: its folders are the projects searched
        folders = sorted({name.split("/", 1)[0] for name in names if "/" in name})
        facts = ExportFacts(reference=facts.reference, projects=folders, prepared_at=facts.prepared_at)
    summaries: list[_FileSummary] = []
    for name in sorted(names):
        data = _load(archive.read(name))
        summaries.append(_write_pages(archive, name, data, facts.prepared_at))
    archive.writestr(_info(INDEX, facts.prepared_at), _index_html(facts, summaries))
    archive.writestr(_info(README, facts.prepared_at), _readme_text(facts, summaries))


def _info(name: str, when: datetime) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=when.astimezone(UTC).timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _load(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _description(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return FILE_DESCRIPTIONS.get(base, "Data in JSON, a structured text format.")


def _page_name(name: str, number: int) -> str:
    stem = name.rsplit(".", 1)[0].replace("/", "--")
    return f"{PAGES_DIR}{stem}-{number}.html"


# --- Time and values ---------------------------------------------------------------------------------------
def _zone() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


def local_time(value: Any) -> str:
    """An event time (Unix seconds or milliseconds, or ISO text in UTC) as local date and time; "" if unknown."""
    moment: datetime | None = None
    if isinstance(value, bool):
        return ""
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 10**11 else value
        try:
            moment = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return str(value)
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if moment.tzinfo is None:  # Mixpanel writes UTC without a zone
            moment = moment.replace(tzinfo=UTC)
    if moment is None:
        return ""
    return moment.astimezone(_zone()).strftime("%-d %b %Y, %H:%M:%S")


def _label(key: str) -> str:
    return FRIENDLY_NAMES.get(key, key.lstrip("$").replace("_", " "))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _visible(properties: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(key, value) for key, value in properties.items() if key not in TECHNICAL_PROPERTIES]


def _e(value: Any) -> str:
    return html.escape(_text(value))


# --- Pages -------------------------------------------------------------------------------------------------
def _kind(name: str, data: Any) -> str:
    """events, profiles, records (a list of objects) or other."""
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        if all("event" in item for item in data):
            return "events"
        if all("$properties" in item or "$distinct_id" in item for item in data):
            return "profiles"
        return "records"
    if isinstance(data, dict) and ("$properties" in data or "$distinct_id" in data):
        return "profiles"
    return "other"


def _write_pages(archive: zipfile.ZipFile, name: str, data: Any, when: datetime) -> _FileSummary:
    kind = _kind(name, data)
    if kind == "profiles" and isinstance(data, dict):
        data = [data]
    rows: list[Any] = data if kind != "other" else [data]
    summary = _FileSummary(name=name, description=_description(name), rows=len(rows) if kind != "other" else 0)
    chunks = [rows[start : start + ROWS_PER_PAGE] for start in range(0, len(rows), ROWS_PER_PAGE)] or [[]]
    summary.pages = [_page_name(name, number) for number in range(1, len(chunks) + 1)]
    for number, chunk in enumerate(chunks, start=1):
        body = {
            "events": _events_table,
            "profiles": _profiles_list,
            "records": _records_table,
            "other": _raw_block,
        }[kind](chunk)
        archive.writestr(
            _info(summary.pages[number - 1], when),
            _page(name, summary, number, body, first_row=(number - 1) * ROWS_PER_PAGE + 1, shown=len(chunk)),
        )
    return summary


def _page(name: str, summary: _FileSummary, number: int, body: str, *, first_row: int, shown: int) -> str:
    total = len(summary.pages)
    links = ['<a href="../index.html">Back to the overview</a>']
    if number > 1:
        links.append(f'<a href="{html.escape(summary.pages[number - 2].removeprefix(PAGES_DIR))}">Previous page</a>')
    if number < total:
        links.append(f'<a href="{html.escape(summary.pages[number].removeprefix(PAGES_DIR))}">Next page</a>')
    nav = f"<nav>{' '.join(links)}</nav>"
    where = (
        f"Rows {first_row} to {first_row + shown - 1} of {summary.rows}, page {number} of {total}."
        if summary.rows
        else ""
    )
    return _document(
        f"{name} (page {number} of {total})",
        f"{nav}<h1>{html.escape(name)}</h1><p>{html.escape(summary.description)}</p>"
        f'<p class="muted">{where} Times are in {html.escape(settings.TIME_ZONE)}.</p>{body}{nav}',
    )


def _events_table(events: Iterable[dict[str, Any]]) -> str:
    rows = []
    for event in events:
        properties = event.get("properties") if isinstance(event.get("properties"), dict) else {}
        shown = _visible(properties)[:MAIN_PROPERTIES]
        details = "<br>".join(f"{html.escape(_label(key))}: {_e(value)}" for key, value in shown)
        rows.append(
            f"<tr><td>{_e(event.get('event'))}</td><td>{local_time(properties.get('time'))}</td><td>{details}</td></tr>"
        )
    return (
        "<table><thead><tr><th>Event</th><th>When (local time)</th><th>Main details</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _profiles_list(profiles: Iterable[dict[str, Any]]) -> str:
    parts = []
    for number, profile in enumerate(profiles, start=1):
        properties = profile.get("$properties") if isinstance(profile.get("$properties"), dict) else profile
        items = "".join(
            f"<dt>{html.escape(_label(key))}</dt><dd>{_profile_value(key, value)}</dd>"
            for key, value in _visible(properties)
        )
        parts.append(f"<h2>Profile {number}</h2><dl>{items}</dl>")
    return "".join(parts)


def _profile_value(key: str, value: Any) -> str:
    if key in {"$created", "$last_seen"}:
        return html.escape(local_time(value) or _text(value))
    return _e(value)


def _records_table(records: Sequence[dict[str, Any]]) -> str:
    columns: list[str] = []
    for record in records:
        columns.extend(key for key in record if key not in columns)
    head = "".join(f"<th>{html.escape(_label(key))}</th>" for key in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(key))}</td>" for key in columns) + "</tr>" for r in records)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _raw_block(values: Sequence[Any]) -> str:
    if not values or values[0] is None:
        return "<p>This file is not JSON: open it with a text editor.</p>"
    return f"<pre>{html.escape(json.dumps(values[0], indent=2, ensure_ascii=False))}</pre>"


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


# --- Overview ----------------------------------------------------------------------------------------------
def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _art15() -> list[tuple[str, str]]:
    items = [(name, title, str(getattr(settings, name, "") or "").strip()) for name, title in ART15_ITEMS]
    # The right to complain is the law's, not the organisation's to describe: state it when nothing is configured.
    return [(title, text or DEFAULTS.get(name, "")) for name, title, text in items]


def _prepared(facts: ExportFacts) -> str:
    return facts.prepared_at.astimezone(_zone()).strftime("%-d %B %Y, %H:%M") + f" ({settings.TIME_ZONE})"


def _index_html(facts: ExportFacts, files: Sequence[_FileSummary]) -> str:
    organisation = html.escape(settings.ORGANISATION_NAME)
    contact = html.escape(settings.PRIVACY_CONTACT_EMAIL)
    projects = "".join(f"<li>{html.escape(name)}</li>" for name in facts.projects) or "<li>(none recorded)</li>"
    rows = []
    for item in files:
        pages = " ".join(
            f'<a href="{html.escape(page)}">{"Read" if len(item.pages) == 1 else f"Page {n}"}</a>'
            for n, page in enumerate(item.pages, start=1)
        )
        count = _entries(item.rows) if item.rows else ""
        rows.append(
            f"<tr><td><code>{html.escape(item.name)}</code></td><td>{html.escape(item.description)}</td>"
            f"<td>{count}</td><td>{pages}</td></tr>"
        )
    art15 = "".join(
        f"<dt>{html.escape(title)}</dt><dd>{html.escape(text) if text else f'Ask us at {contact}.'}</dd>"
        for title, text in _art15()
    )
    body = (
        f"<h1>Your data held by {organisation}</h1>"
        f"<p>This is a copy of the personal data that {organisation} holds about you in its product analytics "
        f"(Mixpanel), prepared for your request {html.escape(facts.reference)} on {html.escape(_prepared(facts))}. "
        "Each file is in two forms: the original JSON files in the folders of this ZIP, and readable pages "
        "linked below. Times on the readable pages are in "
        f"{html.escape(settings.TIME_ZONE)}.</p>"
        f"<h2>What we searched</h2><p>The analytics projects searched:</p><ul>{projects}</ul>"
        "<h2>What each file holds</h2>"
        "<table><thead><tr><th>File</th><th>What it holds</th><th>Size</th><th>Readable pages</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f"<h2>About this data (GDPR Art. 15)</h2><dl>{art15}</dl>"
        f'<h2>Questions</h2><p>Write to <a href="mailto:{contact}">{contact}</a> and mention the reference '
        f"{html.escape(facts.reference)}. Keep this file somewhere safe: anyone who has it can read it.</p>"
    )
    return _document(f"Your data held by {settings.ORGANISATION_NAME}", body)


def _readme_text(facts: ExportFacts, files: Sequence[_FileSummary]) -> str:
    organisation = settings.ORGANISATION_NAME
    lines = [
        f"YOUR DATA HELD BY {organisation.upper()}",
        "",
        f"This is a copy of the personal data that {organisation} holds about you in its product analytics",
        f"(Mixpanel), prepared for your request {facts.reference} on {_prepared(facts)}.",
        "",
        "Open index.html in any web browser for a readable version (it works offline and runs no scripts).",
        "The original files are JSON, a structured text format: any text editor opens them.",
        "",
        "WHAT WE SEARCHED",
        *[f"- {name}" for name in facts.projects or ["(none recorded)"]],
        "",
        "WHAT EACH FILE HOLDS",
    ]
    for item in files:
        count = f" ({_entries(item.rows)})" if item.rows else ""
        lines.append(f"- {item.name}{count}: {item.description}")
    lines += ["", "ABOUT THIS DATA (GDPR ART. 15)"]
    for title, text in _art15():
        lines.append(f"- {title}: {text or 'ask us at ' + settings.PRIVACY_CONTACT_EMAIL + '.'}")
    lines += [
        "",
        "QUESTIONS",
        f"Write to {settings.PRIVACY_CONTACT_EMAIL} and mention the reference {facts.reference}.",
        "Keep this file somewhere safe: anyone who has it can read it.",
        "",
    ]
    return "\r\n".join(lines)
