"""A project's GDPR API credential: what happens when Mixpanel refuses it (401/403), how staff check it, and
how paused work resumes once it works again.

A refused credential stops all of the project's work at once (tasks PAUSED, nothing dispatched), so a bad token
costs one refused call rather than a retry storm, and staff are emailed once per failure, not once per task.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.mixpanel import ratelimit
from gdpr_requests.mixpanel.client import CREDENTIAL, RATE_LIMITED, TRANSIENT, MixpanelError
from gdpr_requests.models import CredentialStatus, MixpanelProject, MixpanelTask, TaskState
from gdpr_requests.pipeline.calls import build_client
from gdpr_requests.pipeline.task_states import DISPATCHABLE
from gdpr_requests.pipeline.task_updates import SYSTEM
from gdpr_requests.requests import selectors

logger = logging.getLogger("gdpr_requests.pipeline")

# A status lookup of this tracking id is harmless: no task can have it, so Mixpanel answers 404/NOT_FOUND when
# the credential works and 401/403 when it does not.
CHECK_TRACKING_ID = "credential-check-00000000-0000-0000-0000-000000000000"
# A person waits for a check, so it may wait this long for the rate limiter (never inside a Celery task).
CHECK_MAX_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str


def credential_failed(project: MixpanelProject, *, http_status: int | None, error: str) -> int:
    """Mixpanel refused the project's credential: mark it failing, pause all its active tasks, and email staff
    (only when it was not failing already). Returns how many tasks were paused."""
    with transaction.atomic():
        now = timezone.now()
        became_failing = (
            MixpanelProject.objects.filter(pk=project.pk)
            .exclude(credential_status=CredentialStatus.FAILING)
            .update(
                credential_status=CredentialStatus.FAILING,
                credential_error=error[:300],
                credential_checked_at=now,
                updated_at=now,
            )
        )
        paused = _pause_tasks(project)
        if became_failing:
            audit_record(
                action="project.credential_failing",
                actor=SYSTEM,
                payload={
                    "project_pk": project.pk,
                    "project": project.name,
                    "http_status": http_status,
                    "paused_tasks": paused,
                },
            )
            project_id = project.pk
            transaction.on_commit(
                lambda: alert_staff_credential_failing(project_id=project_id, http_status=http_status)
            )
        elif paused:
            audit_record(
                action="project.tasks_paused", actor=SYSTEM, payload={"project_pk": project.pk, "paused_tasks": paused}
            )
    project.credential_status = CredentialStatus.FAILING
    return paused


def credential_refused(project: MixpanelProject, exc: MixpanelError) -> str:
    """A step's call got 401/403: the project's work pauses (credential_failed). Returns the step's outcome word."""
    credential_failed(project, http_status=exc.http_status, error=str(exc))
    return "paused"


def _pause_tasks(project: MixpanelProject) -> int:
    return MixpanelTask.objects.filter(project=project, state__in=DISPATCHABLE).update(
        state=TaskState.PAUSED, running_until=None, claimed_until=None, updated_at=timezone.now()
    )


def alert_staff_credential_failing(*, project_id: int, http_status: int | None) -> None:
    """Email staff that a project's credential failed. Runs after commit; a mail error is logged, not raised."""
    project = MixpanelProject.objects.filter(pk=project_id).first()
    recipients = selectors.staff_alert_recipients()
    if project is None or not recipients:
        logger.warning("credential failure of project %s: no staff address to alert", project_id)
        return
    paused = MixpanelTask.objects.filter(project=project, state=TaskState.PAUSED).count()
    status = f"HTTP {http_status}" if http_status else "an unusable stored token"
    body = (
        f'Mixpanel refused the GDPR API credential of the project "{project.name}" ({status}).\n\n'
        f"All of its work is paused ({paused} task{'s' if paused != 1 else ''}); no further calls are made with "
        "this credential, so requests for this project wait.\n\n"
        "To fix it: create a new GDPR OAuth token in Mixpanel (profile settings of an owner or admin of the "
        'project), enter it on the project in the admin, then check it (the project\'s "Check credentials" '
        f'action, or: python manage.py mixpanel_project check "{project.name}"). Paused work resumes as soon as '
        f"the check succeeds.\n\n{settings.SITE_URL.rstrip('/')}/admin/\n"
    )
    try:
        send_mail(
            f"[{settings.ORGANISATION_NAME}] Mixpanel credential failing: {project.name}",
            body,
            settings.DEFAULT_FROM_EMAIL,
            recipients,
        )
    except Exception as exc:  # the audit event stands; the mail server being down must not break the worker
        logger.error("credential failure alert for project %s could not be sent (%s)", project_id, type(exc).__name__)


def project_resume(*, project: MixpanelProject, actor: Actor) -> int:
    """Unpause the project's PAUSED tasks (each back to the state its progress calls for), due now."""
    with transaction.atomic():
        now = timezone.now()
        tasks = list(MixpanelTask.objects.select_for_update().filter(project=project, state=TaskState.PAUSED))
        for task in tasks:
            if task.result_url:
                task.state = TaskState.DOWNLOADING
            elif task.tracking_id:
                task.state = TaskState.SUBMITTED
            else:
                task.state = TaskState.PENDING_SUBMIT
            task.next_attempt_at = now
            task.running_until = None
            task.claimed_until = None
            task.save(update_fields=["state", "next_attempt_at", "running_until", "claimed_until", "updated_at"])
        audit_record(
            action="project.resumed", actor=actor, payload={"project_pk": project.pk, "resumed_tasks": len(tasks)}
        )
    return len(tasks)


def project_check_credentials(*, project: MixpanelProject, actor: Actor) -> CheckResult:
    """One harmless authenticated call (status of a deletion that cannot exist) to test the credential.

    401/403 → failing (its active tasks pause); any other answer from Mixpanel, NOT_FOUND included → working
    (paused tasks resume). No answer (timeout, 5xx, 429) says nothing about the credential: nothing changes.
    Goes through the rate limiter, waiting up to CHECK_MAX_WAIT_SECONDS because a person is waiting. The slot
    is taken ``until_finished``, like a pipeline step's: a slot that freed one interval after it was taken would
    let a worker's call start while this one was still in flight (a slow answer, up to the HTTP timeout, and the
    ApiCall row written before it returns). It is released on every path, an exception included; otherwise the
    project's calls would wait until the hold ran out (ratelimit.hold_seconds()).
    """
    key = ratelimit.key_for(project_id=project.pk, oauth_token=project.oauth_token)
    waited = 0.0
    while True:
        try:
            wait = ratelimit.acquire(key, until_finished=True)
        except ratelimit.RateLimiterUnavailable:
            return CheckResult(False, "The rate limiter (Redis) is not answering; try again shortly.")
        if wait <= 0:
            break
        if waited + wait > CHECK_MAX_WAIT_SECONDS:
            return CheckResult(False, "Mixpanel calls for this project are busy right now; try again in a few seconds.")
        time.sleep(wait)
        waited += wait
    # The slot is ours from here: everything up to the answer sits inside the try, so finished() always runs
    # (a bad base URL override makes build_client raise before any call is sent).
    try:
        with requests.Session() as session:
            client = build_client(project, session=session)
            try:
                client.deletion_status(tracking_id=CHECK_TRACKING_ID)
                failure: MixpanelError | None = None
            except MixpanelError as exc:
                failure = exc
    finally:
        ratelimit.finished(key)
    if failure is not None and failure.kind in (TRANSIENT, RATE_LIMITED):
        with transaction.atomic():
            audit_record(
                action="project.credential_checked",
                actor=actor,
                payload={"project_pk": project.pk, "result": "inconclusive", "http_status": failure.http_status},
            )
        return CheckResult(False, f"Mixpanel did not answer clearly ({failure}); the credential was not checked.")
    now = timezone.now()
    if failure is not None and failure.kind == CREDENTIAL:
        error = str(failure)
        with transaction.atomic():
            MixpanelProject.objects.filter(pk=project.pk).update(
                credential_status=CredentialStatus.FAILING,
                credential_error=error[:300],
                credential_checked_at=now,
                updated_at=now,
            )
            paused = _pause_tasks(project)
            audit_record(
                action="project.credential_checked",
                actor=actor,
                payload={
                    "project_pk": project.pk,
                    "result": "failing",
                    "http_status": failure.http_status,
                    "paused_tasks": paused,
                },
            )
        project.refresh_from_db()
        return CheckResult(
            False,
            f"Mixpanel refused the credential (HTTP {failure.http_status}): replace the project's GDPR OAuth token.",
        )
    with transaction.atomic():
        MixpanelProject.objects.filter(pk=project.pk).update(
            credential_status=CredentialStatus.OK, credential_error="", credential_checked_at=now, updated_at=now
        )
        audit_record(
            action="project.credential_checked", actor=actor, payload={"project_pk": project.pk, "result": "ok"}
        )
        resumed = 0
        if MixpanelTask.objects.filter(project=project, state=TaskState.PAUSED).exists():
            resumed = project_resume(project=project, actor=actor)
    project.refresh_from_db()
    suffix = f" {resumed} paused task{'s' if resumed != 1 else ''} resumed." if resumed else ""
    return CheckResult(True, f"Mixpanel accepted the credential.{suffix}")
