"""The app's configuration. ``ready()`` is where the feature packages are wired together: every hook into the
request services is connected here, explicitly, and every task module is loaded so Celery knows its tasks.
Nothing registers itself as a side effect of being imported."""

from __future__ import annotations

from importlib import import_module

from django.apps import AppConfig

# The packages that define Celery tasks (each in its ``tasks`` module; names pinned in gdpr_requests.tasking).
TASK_PACKAGES = (
    "gdpr_requests.pipeline",
    "gdpr_requests.notifications",
    "gdpr_requests.requests",
    "gdpr_requests.webhooks",
    "gdpr_requests.api",
)


class GdprRequestsConfig(AppConfig):
    name = "gdpr_requests"
    verbose_name = "Privacy requests"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from gdpr_requests.notifications import hooks as notification_hooks
        from gdpr_requests.pipeline import hooks as pipeline_hooks
        from gdpr_requests.pipeline.cancel import request_withdrawal_blocker
        from gdpr_requests.requests import services

        # Subjects hear about their request: a new unverified request asks them to confirm; transitions email them.
        services.register_intake_hook(notification_hooks.after_intake)
        services.register_transition_hook(notification_hooks.after_transition)
        # Approval plans Mixpanel work, withdrawal cancels it, and a deletion Mixpanel has started cannot be withdrawn.
        services.register_transition_hook(pipeline_hooks.on_transition)
        services.register_withdrawal_blocker(request_withdrawal_blocker)
        # Webhooks out: intake (inside its transaction) and every transition (after commit).
        from gdpr_requests.webhooks import hooks as webhook_hooks

        services.register_intake_hook(webhook_hooks.after_intake)
        services.register_transition_hook(webhook_hooks.after_transition)

        from gdpr_requests.staff import register_models

        register_models()

        for package in TASK_PACKAGES:
            import_module(f"{package}.tasks")
