"""URL map: the public portal at /, the staff admin at /admin/, auditor reports at /reports/."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("gdpr_requests.urls")),
]

if settings.MIXPANEL_SANDBOX_ENABLED:
    urlpatterns.append(path("sandbox/mixpanel/", include("mixpanel_sandbox.urls")))
