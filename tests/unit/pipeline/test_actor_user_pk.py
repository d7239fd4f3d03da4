"""Actor.user_pk: the user behind an actor as a foreign key value (services set verified_by, approved_by... with it)."""

from __future__ import annotations

import pytest

from gdpr_requests.audit.chain import Actor


@pytest.mark.django_db
def test_a_staff_actor_names_its_user_and_the_system_and_subject_name_nobody(staff_user):
    assert Actor.staff(staff_user).user_pk == staff_user.pk
    assert Actor.system("pipeline").user_pk is None
    assert Actor.subject().user_pk is None
