from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from gdpr_requests.crypto import DecryptionError
from gdpr_requests.models import MixpanelProject

pytestmark = pytest.mark.django_db


def _raw_oauth(project) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT oauth_token, api_secret FROM gdpr_requests_mixpanelproject WHERE id = %s", [project.pk])
        return " ".join(cursor.fetchone())


def test_secrets_are_not_stored_in_clear(project):
    project.api_secret = "api-secret-value"
    project.save()
    raw = _raw_oauth(project)
    assert "oauth-secret-value" not in raw
    assert "api-secret-value" not in raw
    fresh = MixpanelProject.objects.get(pk=project.pk)
    assert fresh.oauth_token == "oauth-secret-value"
    assert fresh.api_secret == "api-secret-value"


def test_key_rotation_keeps_secrets_readable(project, settings):
    from django.core.management import call_command

    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    call_command("rotate_encryption_keys", verbosity=0)
    settings.FIELD_ENCRYPTION_KEYS = [new_key]  # the old key is gone now
    assert MixpanelProject.objects.get(pk=project.pk).oauth_token == "oauth-secret-value"


def test_a_wrong_key_is_a_clear_error(project, settings):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(DecryptionError, match="FIELD_ENCRYPTION_KEYS"):
        MixpanelProject.objects.get(pk=project.pk)
