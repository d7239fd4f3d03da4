"""Expiring requests whose requester never confirmed their email (a beat task, requests/tasks.py)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from gdpr_requests.models import DataSubjectRequest
from gdpr_requests.requests import services, states


def expire_unverified() -> int:
    """Expire requests whose email was not confirmed within DSR_UNVERIFIED_EXPIRY_DAYS of the last link sent."""
    cutoff = timezone.now() - timedelta(days=settings.DSR_UNVERIFIED_EXPIRY_DAYS)
    stale = DataSubjectRequest.objects.filter(status=states.UNVERIFIED).filter(
        Q(verification_sent_at__lt=cutoff) | Q(verification_sent_at__isnull=True, created_at__lt=cutoff)
    )
    count = 0
    for request in stale.iterator():
        try:
            services.request_expire(request=request)
        except states.TransitionNotAllowed:  # confirmed (or closed by staff) in the meantime
            continue
        count += 1
    return count
