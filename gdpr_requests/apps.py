from __future__ import annotations

import importlib

from django.apps import AppConfig

# Modules that register hooks with services (after-transition, cancel guards) when imported.
HOOK_MODULES = ("gdpr_requests.pipeline", "gdpr_requests.notifications", "gdpr_requests.staff_alerts")


class GdprRequestsConfig(AppConfig):
    name = "gdpr_requests"
    verbose_name = "Privacy requests"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        for module in HOOK_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:  # a real import error inside the module must not be hidden
                    raise
