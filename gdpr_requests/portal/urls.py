"""The public portal. "/request/" is a stable URL: privacy policies link to it."""

from __future__ import annotations

from django.urls import path

from gdpr_requests.portal import views as portal

app_name = "portal"

urlpatterns = [
    path("", portal.home, name="home"),
    # Browsers ask for /favicon.ico whatever the page says; the icon is the static SVG.
    path("favicon.ico", portal.favicon),
    path("request/", portal.request_form, name="request"),
    path("request/sent/", portal.request_sent, name="request_sent"),
    path("link/", portal.resend_link, name="resend"),
    path("link/sent/", portal.links_sent, name="links_sent"),
    path("verify/<str:token>/", portal.verify, name="verify"),
    path("status/<str:token>/", portal.status, name="status"),
    path("status/<str:token>/withdraw/", portal.withdraw, name="withdraw"),
    path("download/<str:token>/", portal.download, name="download"),
    path("download/<str:token>/code/", portal.download_code, name="download_code"),
    # The language switcher: Django's set_language (a cookie); URLs carry no language prefix.
    path("i18n/setlang/", portal.set_language, name="set_language"),
    path("download/<str:token>/started/", portal.download_started, name="download_started"),
    path("download/<str:token>/file/", portal.download_file, name="download_file"),
]
