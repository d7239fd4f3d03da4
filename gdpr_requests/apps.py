from __future__ import annotations

from django.apps import AppConfig


class GdprRequestsConfig(AppConfig):
    name = "gdpr_requests"
    verbose_name = "Privacy requests"
    default_auto_field = "django.db.models.BigAutoField"
