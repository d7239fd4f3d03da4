"""Fixtures of the identity tests (defined in identity_support)."""

from tests.unit.identity.identity_support import clock, engage, identity_settings  # noqa: F401
