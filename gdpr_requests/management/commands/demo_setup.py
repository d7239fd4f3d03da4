"""Demo data for the embedded default: an admin account, a project pointing at the built-in sandbox, requests.

Idempotent: running it again keeps what exists and prints the admin's password only when it creates it; it
points the demo project at the sandbox on the current SITE_URL (another PORT moves it).
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.utils import timezone

from gdpr_requests.audit.chain import Actor
from gdpr_requests.identity.demo import demo_identity_setup
from gdpr_requests.models import Channel, DataSubjectRequest, MixpanelProject, Residency
from gdpr_requests.projects.services import project_update
from gdpr_requests.requests import services

DEMO_PROJECT = "Demo app (sandbox)"


class Command(BaseCommand):
    help = "Create a demo admin, a sandbox Mixpanel project and a few requests (embedded default only)."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            password = secrets.token_urlsafe(12)
            admin = User.objects.create_superuser("admin", "admin@example.com", password)
            admin.groups.add(Group.objects.get(name="Privacy staff"))
            self.stdout.write(self.style.SUCCESS(f"Demo admin: username 'admin', password '{password}'"))
        else:
            self.stdout.write("Demo admin 'admin' exists (password unchanged; reset with manage.py changepassword).")

        if settings.MIXPANEL_SANDBOX_ENABLED:
            sandbox_url = f"{settings.SITE_URL}/sandbox/mixpanel/api/app"
            project, created = MixpanelProject.objects.get_or_create(
                name=DEMO_PROJECT,
                defaults={
                    "mixpanel_project_id": "1000001",
                    "project_token": "demo-sandbox-token",
                    "oauth_token": secrets.token_hex(16),
                    "token_owner_email": "demo-owner@example.com",
                    "token_expires_on": timezone.localdate() + timedelta(days=365),
                    # The sandbox locks retrieval archives with it, as Mixpanel does, so the demo exercises
                    # the password-protected path.
                    "api_secret": secrets.token_hex(16),
                    "api_secret_changed_at": timezone.now(),
                    "residency": Residency.US,
                    "base_url_override": sandbox_url,
                },
            )
            if not created and not project.api_secret:
                # A demo project from before the sandbox locked its archives.
                project.api_secret = secrets.token_hex(16)
                project.api_secret_changed_at = timezone.now()
                project.save(update_fields=["api_secret", "api_secret_changed_at", "updated_at"])
            if project.base_url_override != sandbox_url:
                # `make run PORT=...` on another port: the sandbox moved with the server.
                project = project_update(
                    project=project, actor=Actor.system("demo_setup"), base_url_override=sandbox_url
                )
            self.stdout.write(f"Demo project '{DEMO_PROJECT}' talks to the sandbox at {project.base_url}.")
        if not DataSubjectRequest.objects.exists():
            actor = Actor.system("demo_setup")
            services.request_create(
                kind="access",
                regulation="gdpr",
                email="ada@example.org",
                name="Ada Example",
                distinct_ids=["demo-user-1"],
                channel=Channel.STAFF,
                actor=actor,
                verified_by_staff="demo data: identity assumed",
            )
            services.request_create(
                kind="deletion",
                regulation="ccpa",
                email="grace@example.org",
                name="Grace Example",
                distinct_ids=["demo-user-2", "demo-device-9"],
                channel=Channel.STAFF,
                actor=actor,
                verified_by_staff="demo data: identity assumed",
            )
            services.request_create(
                kind="deletion",
                regulation="gdpr",
                email="alan@example.org",
                actor=actor,
                received_at=timezone.now() - timedelta(days=20),
            )
        if settings.MIXPANEL_SANDBOX_ENABLED:  # identity lookups: an email-only request resolves against the sandbox
            self.stdout.write(demo_identity_setup(project=project))
        self.stdout.write(f"Open {settings.SITE_URL}/admin/ (portal at {settings.SITE_URL}/).")
