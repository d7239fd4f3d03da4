"""The admin app's configuration: Django's own admin, with the staff workspace's site class as the default site.

Kept apart from the site (gdpr_requests/admin_site.py) because INSTALLED_APPS imports it before models load.
"""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class PrivacyAdminConfig(AdminConfig):
    default_site = "gdpr_requests.staff.site.PrivacyAdminSite"
