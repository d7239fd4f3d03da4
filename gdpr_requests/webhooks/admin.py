from __future__ import annotations

from django.contrib import admin


def register(site: admin.AdminSite) -> None:
    return None
