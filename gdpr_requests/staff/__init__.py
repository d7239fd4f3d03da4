"""The staff workspace in the Django admin (the admin site is gdpr_requests.staff.site.PrivacyAdminSite).

- requests_admin: the queue, the request page and one form page per action (each calls one service);
- projects_admin: Mixpanel projects with write-only secrets and "Check credentials";
- records_admin: read-only audit trail (with "Verify chain"), Mixpanel tasks, API calls, exports;
- site: the index page's overview of today's work; services: writes only staff make.

The model admins are registered by ``register_models()``, which apps.py calls once the admin site exists.
"""

from __future__ import annotations


def register_models(site=None) -> None:
    """Register the staff workspace's model admins on ``site`` (the default admin site)."""
    from django.contrib import admin

    from gdpr_requests.models import (
        ApiCall,
        AuditEvent,
        DataSubjectRequest,
        MixpanelProject,
        MixpanelTask,
        SubjectExport,
    )
    from gdpr_requests.staff import projects_admin, records_admin, requests_admin

    site = site or admin.site
    for model, model_admin in (
        (DataSubjectRequest, requests_admin.DataSubjectRequestAdmin),
        (MixpanelProject, projects_admin.MixpanelProjectAdmin),
        (AuditEvent, records_admin.AuditEventAdmin),
        (MixpanelTask, records_admin.MixpanelTaskAdmin),
        (ApiCall, records_admin.ApiCallAdmin),
        (SubjectExport, records_admin.SubjectExportAdmin),
    ):
        if not site.is_registered(model):
            site.register(model, model_admin)
