"""The Celery app. Tasks live in each feature package's tasks module (gdpr_requests/apps.py lists them); they take
ids only and call one service each."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "compliance.settings")

app = Celery("compliance")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
