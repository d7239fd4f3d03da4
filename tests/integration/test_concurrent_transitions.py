from __future__ import annotations

import threading

import pytest
from django.db import connections

from gdpr_requests.audit.chain import Actor
from gdpr_requests.models import AuditEvent, DataSubjectRequest
from gdpr_requests.requests import services, states

# serialized_rollback like the other integration files: its flush then leaves the migrated rows (content types,
# groups) to be restored for the next test, instead of re-creating them with new keys that the next
# serialized_rollback test collides with when this directory runs on its own.
pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), pytest.mark.postgres]


def test_two_concurrent_transitions_of_one_request_exactly_one_wins(require_postgres, make_request):
    dsr = make_request()
    services.request_confirm_email(request=dsr)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def act(action):
        try:
            copy = DataSubjectRequest.objects.get(pk=dsr.pk)
            barrier.wait()
            if action == "approve":
                services.request_approve(request=copy, actor=Actor.system())
            else:
                services.request_reject(request=copy, reason="racing", actor=Actor.system())
            outcomes.append(f"{action}:won")
        except states.TransitionNotAllowed:
            outcomes.append(f"{action}:refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=act, args=(a,)) for a in ("approve", "reject")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.split(":")[1] for o in outcomes) == ["refused", "won"]
    dsr.refresh_from_db()
    assert dsr.status in {states.APPROVED, states.REJECTED}
    moves = AuditEvent.objects.filter(request_reference=dsr.reference, action__in=["request.approve", "request.reject"])
    assert moves.count() == 1
