"""URLs of the built-in Mixpanel sandbox (mounted under /sandbox/mixpanel/ when MIXPANEL_SANDBOX_ENABLED)."""

from __future__ import annotations

urlpatterns: list = []
