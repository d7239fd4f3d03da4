"""Form submissions that arrive together are committed together (portal_services.submit_batch through the
intake GroupCommitter), on PostgreSQL with real threads and connections.

A batch is forced, not hoped for: a separate connection holds the audit chain's advisory lock, so the first
submission's transaction stops just before its audit append while it leads; the burst that follows queues
behind it and becomes one batch when the lock is let go. Celery messages are recorded at ``apply_async``.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from django.db import connection, transaction

from gdpr_requests.audit.chain import _CHAIN_LOCK_ID, verify_database
from gdpr_requests.crypto import email_hash
from gdpr_requests.models import AuditEvent, DataSubjectRequest, SubjectNotification
from gdpr_requests.portal import services as portal_services
from gdpr_requests.portal.group_commit import GroupCommitter
from gdpr_requests.requests import services
from tests.unit.wait_support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_SECONDS = 15.0

# (kind, regulation, email) per caller of the burst. Two callers send the same request (the second spells the
# address differently); one resends the request that is already open before the burst.
BURST = [
    ("access", "gdpr", "ana@example.org"),
    ("access", "gdpr", " Ana@Example.ORG "),
    ("deletion", "gdpr", "ana@example.org"),
    ("deletion", "gdpr", "open@example.org"),
    ("deletion", "ccpa", "bo@example.org"),
    ("access", "ccpa", "cy@example.org"),
    ("deletion", "gdpr", "di@example.org"),
    ("access", "gdpr", "ed@example.org"),
]
SAME_PAIR = (0, 1)
RESENT = 3


@dataclass
class Sent:
    task: str
    args: tuple
    kwargs: dict


@pytest.fixture
def broker(monkeypatch) -> list[Sent]:
    """Every Celery message, recorded where it would leave for the broker (from any thread)."""
    from celery.app.task import Task

    sent: list[Sent] = []
    lock = threading.Lock()

    def apply_async(self, args=None, kwargs=None, **options):
        with lock:
            sent.append(Sent(self.name, tuple(args or ()), dict(kwargs or {})))

    monkeypatch.setattr(Task, "apply_async", apply_async)
    return sent


class ChainLockHolder:
    """A connection of its own that holds the audit chain's advisory lock, as a long audit append would."""

    def __init__(self) -> None:
        db = connection.settings_dict
        params = {
            "dbname": db["NAME"],
            "user": db["USER"],
            "password": db["PASSWORD"],
            "host": db["HOST"],
            "port": db["PORT"],
        }
        self.conn = psycopg.connect(**{k: v for k, v in params.items() if v}, autocommit=True)
        self.held = False

    def take(self) -> None:
        self.conn.execute("SELECT pg_advisory_lock(%s)", [_CHAIN_LOCK_ID])
        self.held = True

    def release(self) -> None:
        if self.held:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", [_CHAIN_LOCK_ID])
            self.held = False

    def waiters(self) -> int:
        """Sessions queued for the chain lock (a bigint key is split into classid and objid, objsubid 1)."""
        row = self.conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = %s AND objid = %s AND objsubid = 1",
            [_CHAIN_LOCK_ID >> 32, _CHAIN_LOCK_ID & 0xFFFFFFFF],
        ).fetchone()
        return row[0]

    def close(self) -> None:
        try:
            self.release()
        finally:
            self.conn.close()


@dataclass
class Burst:
    existing: DataSubjectRequest  # open before the burst, of the same kind and address as BURST[RESENT]
    blocker: portal_services.Submission  # the first submission, which led alone while the lock was held
    outcomes: list[Any]  # per BURST caller: its Submission (or the exception it got)
    batch_sizes: list[int]  # len(items) of every call of submit_batch, in order
    sent: list[Sent]
    events_before: int  # audit events before the blocker's
    project_pk: int  # the one active Mixpanel project, which every new request is linked to


class Submitters:
    """Threads that call request_submit, each with its own database connection, closed when it is done."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def start(self, index: int, store: list[Any], kind: str, regulation: str, email: str) -> None:
        def run() -> None:
            try:
                store[index] = portal_services.request_submit(
                    kind=kind, regulation=regulation, email=email, name="Test Person", distinct_ids=["u-1"]
                )
            except BaseException as exc:
                store[index] = exc
            finally:
                connection.close()

        thread = threading.Thread(target=run, name=f"submit-{index}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(WAIT_SECONDS)
        stuck = [thread.name for thread in self.threads if thread.is_alive()]
        assert not stuck, f"submissions still waiting: {stuck}"


@pytest.fixture
def burst(require_postgres, make_request, project, broker, monkeypatch) -> Burst:
    """Run the scenario: one open request, then a first submission that leads alone and stops at the chain
    lock, then the BURST queued behind it, then the lock let go. Returns what every caller got."""
    existing = make_request(kind="deletion", regulation="gdpr", email="open@example.org")
    events_before = AuditEvent.objects.count()

    batch_sizes: list[int] = []

    def recording_submit_batch(items: Sequence[DataSubjectRequest]) -> list[portal_services.Submission]:
        batch_sizes.append(len(items))
        return portal_services.submit_batch(items)

    intake: GroupCommitter[DataSubjectRequest, portal_services.Submission] = GroupCommitter(
        recording_submit_batch, max_batch=50
    )
    monkeypatch.setattr(portal_services, "_intake", intake)

    holder = ChainLockHolder()
    submitters = Submitters()
    first: list[Any] = [None]
    outcomes: list[Any] = [None] * len(BURST)
    try:
        holder.take()
        submitters.start(0, first, "access", "gdpr", "first@example.org")
        wait_until(lambda: holder.waiters() == 1, "the first submission waits for the chain lock", timeout=WAIT_SECONDS)
        assert intake._leading and not intake._waiting and batch_sizes == [1]
        for index, (kind, regulation, email) in enumerate(BURST):
            submitters.start(index, outcomes, kind, regulation, email)
        wait_until(lambda: len(intake._waiting) == len(BURST), "the whole burst is queued", timeout=WAIT_SECONDS)
        assert holder.waiters() == 1  # nobody else reached the chain: they wait for the leader
    finally:
        holder.close()
        submitters.join()

    assert isinstance(first[0], portal_services.Submission), first[0]
    return Burst(existing, first[0], outcomes, batch_sizes, broker, events_before, project.pk)


def ok(outcomes: list[Any]) -> list[portal_services.Submission]:
    failed = [o for o in outcomes if not isinstance(o, portal_services.Submission)]
    assert not failed, f"submissions failed: {failed!r}"
    return outcomes


@pytest.mark.postgres
def test_a_burst_behind_a_running_commit_is_committed_as_one_batch_with_duplicates_linked(burst):
    """The eight callers that queued while the first commit waited went through submit_batch in one call. Each
    (address, kind) has exactly one request afterwards: the pair that sent the same request got one new
    request and one duplicate of it, and the resent request is linked to the open one, not saved again."""
    assert burst.batch_sizes == [1, len(BURST)]
    outcomes = ok(burst.outcomes)

    first, second = (outcomes[i] for i in SAME_PAIR)
    assert sorted([first.duplicate, second.duplicate]) == [False, True]
    assert first.request.pk == second.request.pk is not None
    assert first.request.email_hash == email_hash("ana@example.org")

    resent = outcomes[RESENT]
    assert resent.duplicate is True
    assert resent.request.pk == burst.existing.pk
    assert resent.request.reference == burst.existing.reference

    duplicates = {i for i, o in enumerate(outcomes) if o.duplicate}
    assert len(duplicates) == 2 and RESENT in duplicates
    new = [o.request for o in outcomes if not o.duplicate]
    assert len(new) == 6 and len({dsr.pk for dsr in new}) == 6

    rows = Counter(DataSubjectRequest.objects.values_list("email_hash", "kind"))
    expected_keys = {(email_hash(email), kind) for kind, _regulation, email in BURST}
    expected_keys |= {(email_hash("first@example.org"), "access")}
    assert set(rows) == expected_keys
    assert set(rows.values()) == {1}  # one row per (address, kind), the open one included
    for dsr in new:
        saved = DataSubjectRequest.objects.get(pk=dsr.pk)
        assert (saved.reference, saved.status, saved.channel) == (dsr.reference, "unverified", "web")
        assert list(saved.projects.values_list("pk", flat=True)) == [burst.project_pk]
    duplicate_events = AuditEvent.objects.filter(action="request.duplicate_submitted")
    assert Counter(duplicate_events.values_list("request_reference", flat=True)) == {
        burst.existing.reference: 1,
        first.request.reference: 1,
    }


@pytest.mark.postgres
def test_a_batch_writes_one_notification_row_per_submission_and_keeps_the_audit_chain_whole(burst):
    """Every submission of the batch has its email recorded as due: 'created' for a new request,
    'duplicate:<event pk>' (its own duplicate_submitted event) for a duplicate. The batch's audit events follow
    the blocker's without a gap, new requests first, and the whole chain verifies."""
    outcomes = ok(burst.outcomes)
    expected: set[tuple[int, str]] = set()
    for submission in outcomes:
        dsr = submission.request
        if submission.duplicate:
            event = AuditEvent.objects.get(action="request.duplicate_submitted", request_reference=dsr.reference)
            expected.add((dsr.pk, f"duplicate:{event.pk}"))
        else:
            expected.add((dsr.pk, "created"))
    assert len(expected) == len(BURST)
    before_burst = {(burst.existing.pk, "created"), (burst.blocker.request.pk, "created")}
    rows = list(SubjectNotification.objects.values_list("request_id", "event"))
    assert len(rows) == len(set(rows))
    assert set(rows) == expected | before_burst

    result = verify_database()
    assert result.ok, result.summary()
    events = list(AuditEvent.objects.order_by("sequence").values_list("sequence", "action", "request_reference"))
    sequences = [sequence for sequence, _action, _reference in events]
    assert sequences == list(range(sequences[0], sequences[0] + len(events)))
    assert result.count == len(events) == burst.events_before + 1 + len(BURST)
    actions = [action for _sequence, action, _reference in events[burst.events_before :]]
    assert actions == ["request.created"] * 7 + ["request.duplicate_submitted"] * 2
    assert events[burst.events_before][2] == burst.blocker.request.reference


@pytest.mark.postgres
def test_a_batch_queues_each_email_once_with_only_ids_and_event_names(burst):
    """After the commits the broker has one entry per due email (the open request's own 'created' aside), and
    messages carry request ids and event names only: no address, no name, no keyword arguments."""
    ok(burst.outcomes)
    queued: list[tuple[int, str]] = []
    for message in burst.sent:
        assert not message.kwargs
        if message.task == "gdpr_requests.tasks.notify_subject":
            request_id, event = message.args
            queued.append((request_id, event))
        else:
            assert message.task == "gdpr_requests.tasks.notify_subjects", message.task
            (pairs,) = message.args
            assert pairs and all(isinstance(pair, list) and len(pair) == 2 for pair in pairs)
            queued.extend((request_id, event) for request_id, event in pairs)
    for request_id, event in queued:
        assert type(request_id) is int and type(event) is str
        assert event == "created" or re.fullmatch(r"duplicate:\d+", event)
    assert "@" not in repr(burst.sent) and "Test Person" not in repr(burst.sent)
    assert Counter(queued) == Counter(SubjectNotification.objects.values_list("request_id", "event"))


@pytest.mark.postgres
def test_a_batch_queues_its_new_requests_emails_in_one_message_and_its_duplicates_in_another(burst):
    """The batch of eight (six new, two duplicates) leaves for the broker as one notify_subjects message with
    the six 'created' pairs and one more for the two duplicates' emails: two messages, not eight."""
    outcomes = ok(burst.outcomes)
    blocker_message = [m for m in burst.sent if m.args and m.args[0] == burst.blocker.request.pk]
    assert [(m.task, m.args) for m in blocker_message] == [
        ("gdpr_requests.tasks.notify_subject", (burst.blocker.request.pk, "created"))
    ]
    after_blocker = burst.sent[burst.sent.index(blocker_message[0]) + 1 :]
    assert [m.task for m in after_blocker] == ["gdpr_requests.tasks.notify_subjects"] * 2
    created, duplicates = (message.args[0] for message in after_blocker)
    assert {event for _pk, event in created} == {"created"} and len(created) == 6
    assert all(re.fullmatch(r"duplicate:\d+", event) for _pk, event in duplicates) and len(duplicates) == 2
    assert {pair[0] for pair in created + duplicates} == {o.request.pk for o in outcomes}


# --- A taken reference ----------------------------------------------------------------------------------
def test_a_taken_reference_reruns_the_whole_transaction_with_a_fresh_one(make_request, monkeypatch):
    """The first reference drawn belongs to an existing request: the INSERT fails, the transaction is run
    again with a new reference, and exactly one request, one request.created event and one 'created' email
    row come of it; nothing of the failed attempt is left and the chain verifies."""
    existing = make_request(email="someone-else@example.org")
    events_before = AuditEvent.objects.count()
    drawn: list[str] = []
    real_new_reference = services.new_reference

    def new_reference() -> str:
        drawn.append(existing.reference if not drawn else real_new_reference())
        return drawn[-1]

    monkeypatch.setattr(services, "new_reference", new_reference)

    submission = portal_services.request_submit(kind="access", regulation="gdpr", email="new@example.org")

    assert len(drawn) == 2 and drawn[0] == existing.reference
    dsr = submission.request
    assert submission.duplicate is False
    assert dsr.reference == drawn[1] != existing.reference
    assert re.fullmatch(r"DSR-[0-9A-Z]{4}-[0-9A-Z]{4}", dsr.reference)
    assert DataSubjectRequest.objects.count() == 2
    assert DataSubjectRequest.objects.get(reference=existing.reference).email_hash == existing.email_hash
    assert DataSubjectRequest.objects.get(reference=dsr.reference).pk == dsr.pk
    new_events = list(AuditEvent.objects.order_by("sequence").values_list("action", "request_reference"))
    assert new_events[events_before:] == [("request.created", dsr.reference)]
    assert list(SubjectNotification.objects.filter(request=dsr).values_list("event", flat=True)) == ["created"]
    result = verify_database()
    assert result.ok and result.count == events_before + 1, result.summary()


def test_a_reference_that_stays_taken_gives_up_after_reference_attempts_and_leaves_nothing(make_request, monkeypatch):
    """Every draw hits the existing reference: the transaction is tried REFERENCE_ATTEMPTS times, the caller
    gets a ServiceError it can show (the form says to try again), and no row, event or email remains."""
    existing = make_request(email="someone-else@example.org")
    events_before = AuditEvent.objects.count()
    drawn: list[str] = []

    def new_reference() -> str:
        drawn.append(existing.reference)
        return existing.reference

    monkeypatch.setattr(services, "new_reference", new_reference)

    with pytest.raises(services.ServiceError, match="try again"):
        portal_services.request_submit(kind="access", regulation="gdpr", email="new@example.org")

    assert len(drawn) == services.REFERENCE_ATTEMPTS
    assert list(DataSubjectRequest.objects.values_list("pk", flat=True)) == [existing.pk]
    assert AuditEvent.objects.count() == events_before
    assert SubjectNotification.objects.exclude(request=existing).count() == 0
    assert verify_database().ok


def test_a_submission_inside_a_transaction_is_committed_in_it_alone(db, monkeypatch):
    """Called inside a transaction (a test, a future caller), request_submit does not hand its row to the
    group committer, whose leader would commit it in another thread's transaction: it is written in the
    caller's own, and rolls back with it."""

    class NoCommitter:
        def submit(self, item: object) -> object:
            raise AssertionError("the group committer was used inside a transaction")

    monkeypatch.setattr(portal_services, "_intake", NoCommitter())
    with pytest.raises(RuntimeError, match="caller rolls back"), transaction.atomic():
        submission = portal_services.request_submit(kind="access", regulation="gdpr", email="inside@example.org")
        assert DataSubjectRequest.objects.filter(pk=submission.request.pk).exists()
        raise RuntimeError("the caller rolls back")
    assert not DataSubjectRequest.objects.filter(email_hash=submission.request.email_hash).exists()
