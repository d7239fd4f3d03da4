"""URLs of the built-in Mixpanel sandbox (mounted under /sandbox/mixpanel/ when MIXPANEL_SANDBOX_ENABLED).

The API paths mirror Mixpanel's below ``api/app/``, so a project's base URL override is
``<SITE_URL>/sandbox/mixpanel/api/app``. The collection paths also match without their trailing slash: with
APPEND_SLASH, Django would otherwise answer a POST there with an error instead of an API response. A
task path also takes an optional trailing slash.
"""

from __future__ import annotations

from django.urls import path, re_path

from mixpanel_sandbox import engage
from mixpanel_sandbox import views as sandbox

app_name = "mixpanel_sandbox"

urlpatterns = [
    re_path(r"^api/app/data-retrievals/v3\.0/?$", sandbox.retrievals_collection, name="retrievals"),
    re_path(r"^api/app/data-retrievals/v3\.0/(?P<tracking_id>[^/]+)/?$", sandbox.retrieval_task, name="retrieval"),
    re_path(r"^api/app/data-deletions/v3\.0/?$", sandbox.deletions_collection, name="deletions"),
    re_path(r"^api/app/data-deletions/v3\.0/(?P<tracking_id>[^/]+)/?$", sandbox.deletion_task, name="deletion"),
    path("download/<str:signed>", sandbox.download, name="download"),
    # The Query API's profile query, beside the GDPR API as on Mixpanel's hosts (mixpanel_sandbox/engage.py).
    re_path(r"^api/query/engage/?$", engage.engage, name="engage"),
]
