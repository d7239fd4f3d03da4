"""URLs of the app: each face has its own module (portal_urls, reports_urls, ops_urls)."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("", include("gdpr_requests.ops.urls")),
    path("reports/", include("gdpr_requests.reports.urls")),
    path("api/", include("gdpr_requests.api.urls")),
    path("", include("gdpr_requests.portal.urls")),
    # The portal's language switcher posts to Django's set_language (a cookie; URLs keep no language prefix).
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("gdpr_requests.cohorts.urls")),
]
