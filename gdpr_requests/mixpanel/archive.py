"""Checks on a retrieval's result before we keep it for the data subject.

Mixpanel's result link points at a file on a host we do not control: a ZIP archive, reportedly protected with
the project's API secret as password (AES or the old ZipCrypto), sometimes a plain ZIP or plain JSON.
``inspect_result`` accepts those and refuses anything that could hurt us or the subject on opening it:
too many entries, a compression ratio that betrays a zip bomb, too much data once uncompressed, absolute or
``..`` paths, symlinks, and a password-protected archive we cannot open.

What comes back is what we store: a plain ZIP or JSON as received, or, for a password-protected archive, the
same entries re-packed without a password (the subject must be able to open it, and must never learn the
project's API secret). Messages of ArchiveRejected describe the problem, never the content.
"""

from __future__ import annotations

import io
import json
import stat
import zipfile
from dataclasses import dataclass

import pyzipper
from django.conf import settings

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or the end record of an empty archive
# pyzipper carries its own copy of zipfile, with its own exception classes.
_BAD_ZIP = (zipfile.BadZipFile, pyzipper.BadZipFile, zipfile.LargeZipFile, pyzipper.LargeZipFile)
_CHUNK = 64 * 1024


class ArchiveRejected(Exception):
    """The result is refused. ``reason`` is a short code for the audit trail; the message is for staff."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    max_entries: int
    max_uncompressed_bytes: int
    max_ratio: float

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            max_entries=settings.MIXPANEL_EXPORT_MAX_ENTRIES,
            max_uncompressed_bytes=settings.MIXPANEL_EXPORT_MAX_UNCOMPRESSED_BYTES,
            max_ratio=settings.MIXPANEL_EXPORT_MAX_RATIO,
        )


def is_zip(content: bytes) -> bool:
    return content[:4] in ZIP_MAGIC


def inspect_result(content: bytes, *, api_secret: str, limits: Limits | None = None) -> bytes:
    """Return the bytes to store for a downloaded retrieval result, or raise ArchiveRejected.

    ``api_secret`` is the project's API secret (may be empty); it opens a password-protected ZIP.
    """
    limits = limits or Limits.from_settings()
    if not content:
        raise ArchiveRejected("The retrieval result is empty.", reason="empty")
    if is_zip(content):
        return _inspect_zip(content, api_secret=api_secret, limits=limits)
    _check_json(content)
    return content


def _check_json(content: bytes) -> None:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ArchiveRejected(
            "The retrieval result is neither a ZIP archive nor JSON.", reason="unknown_format"
        ) from None
    try:
        json.loads(text)
        return
    except ValueError:
        pass
    # Newline-delimited JSON (one event per line) is how Mixpanel exports events elsewhere: accept it too.
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        for line in lines:
            json.loads(line)
    except ValueError:
        lines = []
    if not lines:
        raise ArchiveRejected("The retrieval result is neither a ZIP archive nor JSON.", reason="unknown_format")


def _unsafe_name(name: str) -> bool:
    if not name or "\x00" in name:
        return True
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        return True
    return any(part == ".." for part in normalised.split("/"))


def _inspect_zip(content: bytes, *, api_secret: str, limits: Limits) -> bytes:
    try:
        archive = pyzipper.AESZipFile(io.BytesIO(content))
    except (*_BAD_ZIP, OSError, ValueError, EOFError):
        raise ArchiveRejected("The retrieval result is a damaged ZIP archive.", reason="bad_zip") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_entries:
            raise ArchiveRejected(
                f"The retrieval archive has {len(infos)} entries (the limit is {limits.max_entries}).",
                reason="too_many_entries",
            )
        declared_total = 0
        encrypted = False
        for info in infos:
            if _unsafe_name(info.filename):
                raise ArchiveRejected(
                    "The retrieval archive contains an absolute path or a '..' path.", reason="unsafe_path"
                )
            mode = info.external_attr >> 16
            if mode and stat.S_ISLNK(mode):
                raise ArchiveRejected("The retrieval archive contains a symbolic link.", reason="symlink")
            declared_total += info.file_size
            if info.file_size and (info.compress_size <= 0 or info.file_size / info.compress_size > limits.max_ratio):
                raise ArchiveRejected(
                    f"An entry of the retrieval archive expands more than {limits.max_ratio:g} times (a zip bomb?).",
                    reason="compression_ratio",
                )
            encrypted = encrypted or bool(info.flag_bits & 0x1)
        if declared_total > limits.max_uncompressed_bytes:
            raise ArchiveRejected(
                "The retrieval archive is larger than the limit once uncompressed.", reason="too_large"
            )
        if encrypted:
            if not api_secret:
                raise ArchiveRejected(
                    "The retrieval archive is password-protected, and the project has no API secret to open it: "
                    "add the project's API secret, then retry the request.",
                    reason="password_missing",
                )
            archive.setpassword(api_secret.encode())
        # Read every entry for real: declared sizes can lie, and CRCs and passwords are only checked on reading.
        output = io.BytesIO() if encrypted else None
        repacked = zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) if output is not None else None
        total = 0
        try:
            for info in infos:
                if info.is_dir():
                    if repacked is not None:
                        repacked.writestr(info.filename, b"")
                    continue
                total = _copy_entry(archive, info, repacked, total, limits)
        except ArchiveRejected:
            raise
        except RuntimeError as exc:
            # zipfile/pyzipper raise RuntimeError for a wrong password ("Bad password for file").
            if "password" in str(exc).lower():
                raise ArchiveRejected(
                    "The retrieval archive could not be opened with the project's API secret: check the secret "
                    "in the project's settings, then retry the request.",
                    reason="password_wrong",
                ) from None
            raise ArchiveRejected("The retrieval archive could not be read.", reason="bad_zip") from None
        except (*_BAD_ZIP, OSError, EOFError, ValueError, NotImplementedError):
            # A CRC mismatch, a truncated entry or an unsupported compression method. (pyzipper reports a
            # wrong AES password as a bad HMAC, which lands here too when the password check passed by chance.)
            raise ArchiveRejected(
                "The retrieval archive is damaged or uses an unsupported format.", reason="bad_zip"
            ) from None
        finally:
            if repacked is not None:
                repacked.close()
    return output.getvalue() if output is not None else content


def _copy_entry(
    archive: pyzipper.AESZipFile,
    info: zipfile.ZipInfo,
    repacked: zipfile.ZipFile | None,
    total: int,
    limits: Limits,
) -> int:
    written = 0
    target = None
    if repacked is not None:
        entry = zipfile.ZipInfo(info.filename, date_time=info.date_time)
        entry.compress_type = zipfile.ZIP_DEFLATED
        target = repacked.open(entry, "w", force_zip64=info.file_size > 1 << 30)
    try:
        with archive.open(info) as source:
            while True:
                chunk = source.read(_CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                total += len(chunk)
                if total > limits.max_uncompressed_bytes:
                    raise ArchiveRejected(
                        "The retrieval archive is larger than the limit once uncompressed.", reason="too_large"
                    )
                if written > max(info.file_size, 0) and written > info.compress_size * limits.max_ratio:
                    raise ArchiveRejected(
                        f"An entry of the retrieval archive expands more than {limits.max_ratio:g} times "
                        "(a zip bomb?).",
                        reason="compression_ratio",
                    )
                if target is not None:
                    target.write(chunk)
    finally:
        if target is not None:
            target.close()
    return total
