"""/api/: version 1 of the endpoints, the OpenAPI schema and its documentation (served locally)."""

from __future__ import annotations

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from gdpr_requests.api import views

app_name = "api"


class DocsView(SpectacularSwaggerSplitView):
    # The package's page without its inline <style>; its script comes from a URL: the site's CSP holds.
    template_name = "api/swagger_ui.html"


urlpatterns = [
    path("v1/requests/", views.RequestListCreateView.as_view(), name="request-list"),
    path("v1/requests/<str:reference>/", views.RequestDetailView.as_view(), name="request-detail"),
    path("v1/requests/<str:reference>/cancel/", views.RequestCancelView.as_view(), name="request-cancel"),
    path("v1/audit-events/", views.AuditEventsView.as_view(), name="audit-events"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", DocsView.as_view(url_name="api:schema"), name="docs"),
]
