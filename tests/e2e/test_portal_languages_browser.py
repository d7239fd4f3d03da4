"""A person makes a request in German, another in Polish, on a 390 px phone, and gets the email in that language.

The language comes from the switcher in the header (a POST to set_language, then a cookie). Long German compounds
and Polish inflections must not widen the page: no sideways scrolling on any page of the way. Screenshots go to the
test's output folder (test-results/...).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from django.core import mail

from gdpr_requests.models import DataSubjectRequest
from tests.e2e.test_portal_browser import latest_link, local, watch

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}

JOURNEYS = {
    "de": {
        "switch": "Sprache wechseln",
        "start": "Antrag starten",
        "form_title": "Datenschutzantrag stellen",
        "send": "Antrag senden",
        "missing": "Geben Sie Ihre E-Mail-Adresse ein.",
        "access": "Eine Kopie meiner Daten erhalten",
        "name": "Ihr vollständiger Name",
        "email": "Ihre E-Mail-Adresse",
        "residence": "Europäische Union, EWR oder Vereinigtes Königreich",
        "sent_title": "Prüfen Sie Ihre E-Mails",
        "subject": "Bitte bestätigen Sie Ihren Datenschutzantrag",
        "body": ["Guten Tag,", "Antrag auf eine Kopie Ihrer Daten", "Der Link gilt 48 Stunden."],
        "confirm": "Meinen Antrag bestätigen",
        "status": "In Prüfung",
    },
    "pl": {
        "switch": "Zmień język",
        "start": "Złóż wniosek",
        "form_title": "Złóż wniosek dotyczący prywatności",
        "send": "Wyślij wniosek",
        "missing": "Podaj swój adres e-mail.",
        "access": "Chcę otrzymać kopię moich danych",
        "name": "Imię i nazwisko",
        "email": "Twój adres e-mail",
        "residence": "Unia Europejska, EOG lub Zjednoczone Królestwo",
        "sent_title": "Sprawdź swoją skrzynkę e-mail",
        "subject": "Potwierdź swój wniosek dotyczący prywatności",
        "body": ["Dzień dobry,", "wniosek o kopię Twoich danych", "Link jest ważny przez 48 godzin."],
        "confirm": "Potwierdzam mój wniosek",
        "status": "W weryfikacji",
    },
}


def assert_no_sideways_scrolling(page, name: str) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{name} scrolls sideways ({width}px at {PHONE['width']}px)"


@pytest.mark.parametrize("language", ["de", "pl"])
def test_a_request_made_in_another_language_at_390_px_is_confirmed_by_email_in_it(
    language, browser, live_server, worker, shots, settings
):
    settings.SITE_URL = live_server.url
    words = JOURNEYS[language]
    page = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    problems: list[str] = []
    watch(page, problems)
    base = live_server.url

    # The start page in English, then the switcher in the header.
    page.goto(base + "/")
    assert page.locator("html").get_attribute("lang") == "en"
    page.select_option("#language-select", language)
    page.get_by_role("button", name="Change language").click()
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == language
    assert_no_sideways_scrolling(page, "home")
    shots(page, f"{language}-home")

    page.get_by_role("link", name=words["start"]).first.click()
    page.wait_for_url(base + "/request/")
    assert page.get_by_role("heading", level=1).inner_text() == words["form_title"]
    assert page.get_by_role("button", name=words["switch"]).is_visible()
    assert_no_sideways_scrolling(page, "form")
    shots(page, f"{language}-form")

    # Sent empty: the errors are in the chosen language, and still fit.
    page.get_by_role("button", name=words["send"]).click()
    page.wait_for_load_state()
    assert words["missing"] in page.locator("[data-error-summary]").inner_text()
    assert_no_sideways_scrolling(page, "form with errors")
    shots(page, f"{language}-form-errors")

    page.get_by_label(words["access"]).check()
    page.get_by_label(words["name"]).fill("Zofia Łukasiewicz-Müller")
    page.get_by_label(words["email"], exact=True).fill(f"{language}.e2e@example.org")
    page.get_by_label(words["residence"]).check()
    page.get_by_role("button", name=words["send"]).click()
    page.wait_for_url(base + "/request/sent/")
    assert page.get_by_role("heading", level=1).inner_text() == words["sent_title"]
    assert_no_sideways_scrolling(page, "check your email")
    shots(page, f"{language}-check-email")

    # The worker sends the confirmation email in the language the form was filled in.
    worker.run_due()
    dsr = DataSubjectRequest.objects.get()
    assert dsr.language == language
    [message] = mail.outbox
    assert message.subject == f"{words['subject']} {dsr.reference}"
    for phrase in words["body"]:
        assert phrase in message.body, phrase
    html = message.alternatives[0][0]
    assert f'<html lang="{language}">' in html

    # The email's HTML at phone width, as a mail app would show it.
    mail_view = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    mail_view.set_content(html)
    assert_no_sideways_scrolling(mail_view, "confirmation email")
    shots(mail_view, f"{language}-email")
    mail_view.close()

    # The emailed link: the confirm page and the status page (sent without a Referer) in the same language.
    page.goto(local(latest_link("verify"), base))
    page.get_by_role("button", name=words["confirm"]).click()
    page.wait_for_url(re.compile(r".*/status/.*\?confirmed=1$"))
    assert page.get_by_role("heading", level=1).inner_text().startswith(words["status"])
    assert_no_sideways_scrolling(page, "status")
    shots(page, f"{language}-status")

    # Switching back to English from a no-referrer page works too (the browser sends "Origin: null").
    status_path = urlsplit(page.url).path
    page.select_option("#language-select", "en")
    page.get_by_role("button", name=words["switch"]).click()
    page.wait_for_load_state()
    assert urlsplit(page.url).path == status_path
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("heading", level=1).inner_text().startswith("In review")
    page.close()
    assert not problems, problems
