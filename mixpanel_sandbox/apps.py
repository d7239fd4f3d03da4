from __future__ import annotations

from django.apps import AppConfig


class MixpanelSandboxConfig(AppConfig):
    """A Mixpanel GDPR API simulator for development and demos (MIXPANEL_SANDBOX_ENABLED); production refuses it."""

    name = "mixpanel_sandbox"
    verbose_name = "Mixpanel sandbox"
    default_auto_field = "django.db.models.BigAutoField"
