"""Mixpanel's cohort sync webhook, one address per intake (its unguessable public id)."""

from __future__ import annotations

from django.urls import path

from gdpr_requests.cohorts.views import cohort_webhook

urlpatterns = [
    path("integrations/mixpanel/cohorts/<str:public_id>/", cohort_webhook, name="cohort_webhook"),
]
