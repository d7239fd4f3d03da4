"""The staff workspace in the Django admin (the admin site is gdpr_requests.admin_site.PrivacyAdminSite).

- requests_admin: the queue, the request page and one form page per action (each calls one service);
- projects_admin: Mixpanel projects with write-only secrets and "Check credentials";
- records_admin: read-only audit trail (with "Verify chain"), Mixpanel tasks, API calls, exports;
- site: the index page's overview of today's work.
"""

from __future__ import annotations

from . import projects_admin, records_admin, requests_admin  # noqa: F401  (registers the model admins)
