"""The subject's language: chosen on the portal, stored at intake, used for every email the worker sends them.

Staff pages stay in English whatever the browser asks for; the evidence pack records the language.
"""

from __future__ import annotations

import io
from datetime import date

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import translation

from gdpr_requests.models import DataSubjectRequest
from gdpr_requests.notifications import rendering
from gdpr_requests.portal import services as portal_services
from gdpr_requests.reports.evidence import build_evidence_pack
from gdpr_requests.requests import services

pytestmark = pytest.mark.django_db

FORM = {"kind": "access", "name": "Ana Núñez", "email": "ana@example.org", "residence": "eea_uk"}


def text_of(response) -> str:
    return response.content.decode()


def test_accept_language_picks_the_portal_language_and_the_page_says_so():
    response = Client(HTTP_ACCEPT_LANGUAGE="de-AT,de;q=0.9,en;q=0.5").get(reverse("portal:request"))
    html = text_of(response)
    assert '<html lang="de">' in html
    assert "Datenschutzantrag stellen" in html and "Make a privacy request" not in html
    assert response["Content-Language"] == "de"
    assert "Accept-Language" in response["Vary"]  # a shared cache must keep one copy per language


def test_an_unsupported_language_falls_back_to_english():
    html = text_of(Client(HTTP_ACCEPT_LANGUAGE="ja").get(reverse("portal:home")))
    assert '<html lang="en">' in html and "See or delete the data we hold about you" in html


def test_the_switcher_sets_a_cookie_that_beats_accept_language_and_urls_keep_no_prefix():
    client = Client(HTTP_ACCEPT_LANGUAGE="de")
    response = client.post(reverse("portal:set_language"), {"language": "pl", "next": "/request/"})
    assert response.status_code == 302 and response["Location"] == "/request/"
    assert client.cookies["django_language"].value == "pl"
    html = text_of(client.get("/request/"))
    assert '<html lang="pl">' in html and "Złóż wniosek dotyczący prywatności" in html


def test_the_switcher_refuses_to_send_people_to_another_site():
    response = Client().post(reverse("portal:set_language"), {"language": "fr", "next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == "/"


def test_every_page_offers_the_eight_languages_in_their_own_names():
    html = text_of(Client().get(reverse("portal:home")))
    for name in ("English", "Deutsch", "Français", "Español", "Italiano", "Nederlands", "Português", "Polski"):
        assert f">{name}</option>" in html
    assert f'action="{reverse("portal:set_language")}"' in html


def test_form_errors_are_in_the_visitors_language():
    response = Client(HTTP_ACCEPT_LANGUAGE="pl").post(reverse("portal:request"), {})
    html = text_of(response)
    assert "Podaj swój adres e-mail." in html and "Podaj swoje imię i nazwisko." in html
    assert "Enter your email address." not in html


def test_the_web_form_stores_the_language_the_form_was_shown_in(celery_eager, settings):
    settings.DSR_PUBLIC_RATE_LIMITS_ENABLED = False
    client = Client()
    client.cookies["django_language"] = "fr"
    response = client.post(reverse("portal:request"), FORM)
    assert response.status_code == 302
    assert DataSubjectRequest.objects.get().language == "fr"


def test_intake_takes_a_regional_variant_and_refuses_a_language_we_do_not_write(make_request):
    assert make_request(language="pt-BR").language == "pt"
    assert make_request(email="other@example.org").language == "en"
    with pytest.raises(services.ServiceError, match="Unknown language 'ja'"):
        make_request(email="third@example.org", language="ja")


def test_emails_are_written_in_the_subjects_language_whatever_the_worker_runs_in(
    celery_eager, django_capture_on_commit_callbacks
):
    with translation.override("fr"), django_capture_on_commit_callbacks(execute=True):
        dsr = portal_services.request_submit(
            kind="deletion", regulation="gdpr", email="jan@example.org", name="Jan", language="pl"
        ).request
    [message] = mail.outbox
    html = message.alternatives[0][0]
    assert message.subject == f"Potwierdź swój wniosek dotyczący prywatności {dsr.reference}"
    assert message.body.startswith("Dzień dobry,\n")
    assert "usunięcie Twoich danych" in message.body and "Link jest ważny przez 48 godzin." in message.body
    assert '<html lang="pl">' in html and "<strong>usunięcie Twoich danych</strong>" in html
    assert message.extra_headers["Content-Language"] == "pl"
    # The date in the language's own format: Polish months in the genitive ("2 grudnia 2026").
    with translation.override("pl"):
        assert rendering.localised_day(dsr.due_at) in message.body
    assert translation.get_language() != "pl"  # the worker's own language is left as it was


@pytest.mark.parametrize(
    ("language", "expected"),
    [("en", "2 December 2026"), ("de", "2. Dezember 2026"), ("pl", "2 grudnia 2026"), ("es", "2 de diciembre de 2026")],
)
def test_dates_follow_each_languages_format(language, expected):
    with translation.override(language):
        assert rendering.localised_day(date(2026, 12, 2)) == expected


def test_a_language_no_longer_offered_falls_back_to_the_default(make_request, settings):
    dsr = make_request(language="nl")
    settings.LANGUAGES = [code for code in settings.LANGUAGES if code[0] != "nl"]
    message = rendering.build_message(dsr, "created")
    assert message.subject.startswith("Please confirm your privacy request")


def test_the_csv_import_takes_a_language_column(tmp_path):
    path = tmp_path / "requests.csv"
    path.write_text("kind,regulation,email,language\naccess,gdpr,a@example.org,de\ndeletion,gdpr,b@example.org,\n")
    call_command("dsr", "import", str(path), stdout=io.StringIO())
    assert dict(DataSubjectRequest.objects.values_list("requester_email", "language")) == {
        "a@example.org": "de",
        "b@example.org": "en",
    }


def test_staff_pages_stay_english_whatever_the_browser_asks_for(staff_user):
    client = Client(HTTP_ACCEPT_LANGUAGE="de")
    html = text_of(client.get("/admin/login/"))
    assert "Log in" in html and "Anmelden" not in html
    client.cookies["django_language"] = "fr"
    assert "Log in" in text_of(client.get("/admin/login/"))


def test_the_evidence_pack_records_the_language_used(make_request):
    dsr = make_request(language="it")
    assert build_evidence_pack(reference=dsr.reference)["request"]["language"] == "it"


def test_a_refused_oversized_body_is_explained_in_the_visitors_language(settings):
    settings.DSR_MAX_BODY_BYTES = 10
    response = Client(HTTP_ACCEPT_LANGUAGE="nl").post(
        reverse("portal:request"), data="x" * 100, content_type="text/plain"
    )
    assert response.status_code == 413 and "Te veel gegevens" in text_of(response)


def test_a_refusal_by_the_intake_service_is_shown_in_the_visitors_language(monkeypatch, settings):
    settings.DSR_PUBLIC_RATE_LIMITS_ENABLED = False

    def refuse(**_kwargs):
        raise services.ServiceError("The received date is in the future.")

    monkeypatch.setattr(portal_services, "request_submit", refuse)
    html = text_of(Client(HTTP_ACCEPT_LANGUAGE="de").post(reverse("portal:request"), FORM))
    assert "Wir konnten Ihren Antrag in dieser Form nicht annehmen." in html and "received date" not in html
    english = text_of(Client().post(reverse("portal:request"), FORM))
    assert "The received date is in the future." in english


def test_a_rejection_email_states_its_ground_in_the_subjects_language(
    make_request, staff_actor, celery_eager, django_capture_on_commit_callbacks
):
    from gdpr_requests.models import RejectionGround
    from gdpr_requests.requests import services

    dsr = make_request(verified_by_staff="passport checked", language="de")
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.request_reject(request=dsr, reason="", actor=staff_actor, ground=RejectionGround.MANIFESTLY_UNFOUNDED)
    [message] = mail.outbox
    assert "Der Antrag ist offenkundig unbegründet oder exzessiv" in message.body
    assert "manifestly unfounded" not in message.body
