"""What every Celery task of the app shares: idempotent, acknowledged late, time-limited, no result kept.

Each task keeps the name it had when all tasks lived in ``gdpr_requests/tasks.py`` (``name=`` is pinned), so
messages already queued in a running installation still find their task, and settings.CELERY_TASK_ROUTES and
the beat schedule name them that way.
"""

from __future__ import annotations

TASK_OPTIONS = {"acks_late": True, "soft_time_limit": 120, "time_limit": 180, "ignore_result": True}
NAME_PREFIX = "gdpr_requests.tasks."


def options(name: str) -> dict:
    """Keyword arguments for ``shared_task`` with the task's pinned name."""
    return {**TASK_OPTIONS, "name": NAME_PREFIX + name}
