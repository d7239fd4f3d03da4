"""Checks on retrieval results (gdpr_requests/mixpanel/archive.py): what is accepted, what is refused and why."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib

import pytest
import pyzipper

from gdpr_requests.mixpanel.archive import ArchiveRejected, Limits, inspect_result

SECRET = "project-api-secret"
EVENTS = json.dumps([{"event": "Viewed page", "properties": {"n": n}} for n in range(50)]).encode()
LIMITS = Limits(max_entries=10, max_uncompressed_bytes=1_000_000, max_ratio=100.0)


def plain_zip(members: dict[str, bytes], **info_overrides) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            for key, value in info_overrides.items():
                setattr(info, key, value)
            archive.writestr(info, data)
    return buffer.getvalue()


def aes_zip(members: dict[str, bytes], password: str) -> bytes:
    buffer = io.BytesIO()
    with pyzipper.AESZipFile(buffer, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as archive:
        archive.setpassword(password.encode())
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


class _ZipCrypto:
    """PKWARE's traditional encryption (what `zip -P` writes), to build test archives without tools."""

    def __init__(self, password: bytes) -> None:
        self.keys = [0x12345678, 0x23456789, 0x34567890]
        for byte in password:
            self._update(byte)

    @staticmethod
    def _crc(crc: int, byte: int) -> int:
        return zlib.crc32(bytes([byte]), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF

    def _update(self, byte: int) -> None:
        k0, k1, k2 = self.keys
        k0 = self._crc(k0, byte)
        k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k2 = self._crc(k2, (k1 >> 24) & 0xFF)
        self.keys = [k0, k1, k2]

    def encrypt(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            temp = (self.keys[2] | 2) & 0xFFFF
            out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
            self._update(byte)
        return bytes(out)


def zipcrypto_zip(members: dict[str, bytes], password: str) -> bytes:
    body = io.BytesIO()
    central = io.BytesIO()
    count = 0
    for name, data in members.items():
        crc = zlib.crc32(data)
        cipher = _ZipCrypto(password.encode())
        payload = cipher.encrypt(os.urandom(11) + bytes([crc >> 24])) + cipher.encrypt(data)
        encoded = name.encode()
        offset = body.tell()
        body.write(
            struct.pack(
                "<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0x1, 0, 0, 0x21, crc, len(payload), len(data), len(encoded), 0
            )
        )
        body.write(encoded + payload)
        central.write(
            struct.pack(
                "<4s4B4HL2L5H2L",
                b"PK\x01\x02",
                20,
                0,
                20,
                0,
                0x1,
                0,
                0,
                0x21,
                crc,
                len(payload),
                len(data),
                len(encoded),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
        )
        central.write(encoded)
        count += 1
    directory = central.getvalue()
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), body.tell(), 0)
    return body.getvalue() + directory + end


def rejected(content: bytes, *, api_secret: str = SECRET, limits: Limits = LIMITS) -> ArchiveRejected:
    with pytest.raises(ArchiveRejected) as caught:
        inspect_result(content, api_secret=api_secret, limits=limits)
    return caught.value


# --- accepted -----------------------------------------------------------------------------------------


def test_a_plain_zip_is_kept_as_received():
    content = plain_zip({"events.json": EVENTS, "profile/profile.json": b'{"name": "x"}'})
    assert inspect_result(content, api_secret="", limits=LIMITS) == content


def test_an_aes_zip_is_opened_with_the_api_secret_and_repacked_without_a_password():
    stored = inspect_result(aes_zip({"events.json": EVENTS}, SECRET), api_secret=SECRET, limits=LIMITS)
    with zipfile.ZipFile(io.BytesIO(stored)) as archive:
        assert archive.read("events.json") == EVENTS  # no password needed any more
        assert not any(info.flag_bits & 0x1 for info in archive.infolist())


def test_a_zipcrypto_zip_is_opened_with_the_api_secret():
    content = zipcrypto_zip({"events.json": EVENTS}, SECRET)
    with zipfile.ZipFile(io.BytesIO(content)) as check:  # the builder writes what the standard library reads
        assert check.read("events.json", pwd=SECRET.encode()) == EVENTS
    stored = inspect_result(content, api_secret=SECRET, limits=LIMITS)
    with zipfile.ZipFile(io.BytesIO(stored)) as archive:
        assert archive.read("events.json") == EVENTS


@pytest.mark.parametrize("content", [EVENTS, b'{"a": 1}\n{"b": 2}\n'], ids=["json", "json-lines"])
def test_plain_json_is_accepted(content):
    assert inspect_result(content, api_secret="", limits=LIMITS) == content


def test_the_limits_come_from_settings_by_default(settings):
    settings.MIXPANEL_EXPORT_MAX_ENTRIES = 1
    with pytest.raises(ArchiveRejected, match="2 entries"):
        inspect_result(plain_zip({"a.json": b"{}", "b.json": b"{}"}), api_secret="")


# --- refused ------------------------------------------------------------------------------------------


def test_a_wrong_password_is_refused_with_a_clear_message():
    error = rejected(aes_zip({"events.json": EVENTS}, "another secret"))
    assert error.reason == "password_wrong"
    assert "API secret" in str(error)


def test_a_wrong_password_on_a_zipcrypto_archive_is_refused():
    assert rejected(zipcrypto_zip({"events.json": EVENTS}, "another secret")).reason in {"password_wrong", "bad_zip"}


def test_a_password_protected_archive_without_a_secret_is_refused():
    error = rejected(aes_zip({"events.json": EVENTS}, SECRET), api_secret="")
    assert error.reason == "password_missing"
    assert "no API secret" in str(error)


def test_a_zip_bomb_is_refused_by_its_compression_ratio():
    assert rejected(plain_zip({"zeros.json": b"0" * 5_000_000})).reason == "compression_ratio"


def test_too_much_data_once_uncompressed_is_refused():
    members = {f"part-{n}.json": os.urandom(300_000).hex().encode()[:300_000] for n in range(5)}
    assert rejected(plain_zip(members)).reason == "too_large"


def test_too_many_entries_are_refused():
    assert rejected(plain_zip({f"e{n}.json": b"{}" for n in range(11)})).reason == "too_many_entries"


@pytest.mark.parametrize(
    "name", ["../../etc/cron.d/evil", "/etc/passwd", "data/../../escape.json", "C:/Windows/evil", "..\\evil.json"]
)
def test_absolute_and_parent_paths_are_refused(name):
    assert rejected(plain_zip({name: b"{}"})).reason == "unsafe_path"


def test_a_symlink_is_refused():
    content = plain_zip({"link": b"/etc/passwd"}, create_system=3, external_attr=(0o120777 << 16))
    assert rejected(content).reason == "symlink"


def test_sizes_that_lie_are_caught_when_reading():
    # The central directory claims 10 bytes for an entry that expands to 5 MB.
    content = bytearray(plain_zip({"small.json": b"0" * 5_000_000}))
    central = content.rfind(b"PK\x01\x02")
    struct.pack_into("<L", content, central + 24, 10)  # uncompressed size in the central directory
    assert rejected(bytes(content)).reason in {"bad_zip", "compression_ratio"}


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", b"\x89PNG\r\n\x1a\n", b"<html>oops</html>"])
def test_anything_else_is_refused(content):
    assert rejected(content).reason in {"empty", "bad_zip", "unknown_format"}
