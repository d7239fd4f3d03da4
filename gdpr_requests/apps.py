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
    "gdpr_requests.ops",
    "gdpr_requests.identity",
    "gdpr_requests.cohorts",
    "gdpr_requests.webhooks",
    "gdpr_requests.api",
)


class GdprRequestsConfig(AppConfig):
    name = "gdpr_requests"
    verbose_name = "Privacy requests"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib import admin
        from django.contrib.auth.signals import user_login_failed
        from django_otp.forms import otp_verification_failed

        from gdpr_requests.api.admin import register as register_api_admin
        from gdpr_requests.cohorts import services as cohort_services
        from gdpr_requests.cohorts.admin import CohortIntakeAdmin
        from gdpr_requests.identity import admin as identity_admin
        from gdpr_requests.identity import hooks as identity_hooks
        from gdpr_requests.identity.services import approval_blocker as identity_approval_blocker
        from gdpr_requests.models import CohortIntake
        from gdpr_requests.notifications import hooks as notification_hooks
        from gdpr_requests.pipeline import hooks as pipeline_hooks
        from gdpr_requests.pipeline.cancel import request_withdrawal_blocker
        from gdpr_requests.requests import services
        from gdpr_requests.staff import register_models
        from gdpr_requests.staff.login_security import audit_failed_login, audit_failed_second_factor
        from gdpr_requests.webhooks import hooks as webhook_hooks
        from gdpr_requests.webhooks.admin import register as register_webhooks_admin

        # Subjects hear about their request: a new unverified request asks them to confirm; transitions email them
        # (the email is due in the transition's own transaction).
        services.register_intake_hook(notification_hooks.after_intake)
        services.register_transition_recorder(notification_hooks.record_transitions)
        # Approval plans Mixpanel work, withdrawal cancels it, and a deletion Mixpanel has started cannot be withdrawn.
        services.register_transition_hook(pipeline_hooks.on_transition, many=pipeline_hooks.on_transitions)
        services.register_withdrawal_blocker(request_withdrawal_blocker)
        # Identity lookups: a request that becomes (or is created) verified is looked up by email in Mixpanel;
        # approval waits for a running lookup; the request page shows the candidates.
        services.register_intake_hook(identity_hooks.after_intake)
        services.register_transition_hook(identity_hooks.on_transition)
        services.register_approval_blocker(identity_approval_blocker)
        # A request from an auto-approving cohort intake is approved once its subject confirms their email.
        services.register_transition_hook(cohort_services.approve_after_verification)
        # Webhooks out: intake and every transition, inside their transactions (nothing lost to a crash).
        services.register_intake_hook(webhook_hooks.after_intake)
        services.register_transition_recorder(webhook_hooks.record_transitions)

        # The staff workspace's model admins, on the admin site that exists by now.
        register_models()
        # Each feature package's own admin pages (they build on the staff workspace's toolkit).
        identity_admin.register()
        if not admin.site.is_registered(CohortIntake):
            admin.site.register(CohortIntake, CohortIntakeAdmin)
        register_api_admin(admin.site)
        register_webhooks_admin(admin.site)

        # Every failed staff login (django-axes' lockouts included) goes into the audit trail. Receivers run in
        # the order they were connected, and django-axes' (which flags request.axes_locked_out) must run first.
        import axes.signals  # noqa: F401

        user_login_failed.connect(audit_failed_login, dispatch_uid="gdpr_requests.audit_failed_login")
        otp_verification_failed.connect(
            audit_failed_second_factor, dispatch_uid="gdpr_requests.audit_failed_second_factor"
        )

        for package in TASK_PACKAGES:
            import_module(f"{package}.tasks")
