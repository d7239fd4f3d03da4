"""Log formatting and a personal-data safety net.

Callers log references and ids only, never personal data, and pass structured context with
``extra={"reference": ..., "task_id": ..., "outcome": ...}``. Production writes one JSON object per line
(``JsonFormatter``); development writes readable text with the same context appended as ``key=value``
(``TextFormatter``). ``RedactFilter`` sits on the handlers as a last line of defence: anything that looks like
an email address, a bearer token or a signed link of the portal (``/verify/<token>/``, ``/status/<token>/``,
``/download/<token>/``, as the development server and error reports print request paths) is replaced before a
record is written, whoever logged it. Percent-encoded text (``ana%40example.org`` in a query string) is decoded
first, so that encoding does not hide an address.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

EMAIL_PATTERN = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+"
)
BEARER_PATTERN = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
# The portal's URLs that carry a signed token as their segment after the prefix (portal/urls.py).
TOKEN_PATH_PATTERN = re.compile(r"(/(?:verify|status|download)/)[^/\s\"'?#<>]+")
EMAIL_PLACEHOLDER = "[email redacted]"
TOKEN_PLACEHOLDER = "[token redacted]"
# "%2540" is "%40" encoded once more; two rounds undo what a URL in a URL does.
_DECODE_ROUNDS = 2


def redact(text: str) -> str:
    """Replace email addresses, bearer tokens and signed link tokens in ``text`` (percent-decoded first)."""
    for _ in range(_DECODE_ROUNDS):
        if "%" not in text:
            break
        text = unquote(text)
    if "@" in text:
        text = EMAIL_PATTERN.sub(EMAIL_PLACEHOLDER, text)
    if "earer" in text:
        text = BEARER_PATTERN.sub(r"\1[redacted]", text)
    if "/verify/" in text or "/status/" in text or "/download/" in text:
        text = TOKEN_PATH_PATTERN.sub(rf"\1{TOKEN_PLACEHOLDER}", text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(item) for item in value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    return value


_PLAIN = (str, int, float, bool, type(None), list, tuple, dict)


def context(record: logging.LogRecord) -> dict[str, Any]:
    """The structured context a caller passed with ``extra=``.

    Only plain values: objects such as the HttpRequest that Django attaches to its records would print their
    URL (which can carry a signed link), so they are left out.
    """
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_") and isinstance(value, _PLAIN)
    }


class RedactFilter(logging.Filter):
    """Redacts email addresses and bearer tokens from the message, its context and any traceback.

    It formats the message itself (so that an address passed as an argument is caught too) and freezes the
    result into the record; it never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is logging's problem to report, not ours
            return True
        record.msg = redact(message)
        record.args = None
        for key, value in context(record).items():
            setattr(record, key, _redact_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            # The text above is what formatters print; keeping exc_info would let them format it afresh.
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the ``extra=`` context."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(context(record))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines for development: ``time LEVEL logger message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extras = " ".join(f"{key}={value}" for key, value in sorted(context(record).items()))
        return f"{line} {extras}" if extras else line
