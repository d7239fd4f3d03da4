"""The admin site: Django's own, with today's work on the index page (numbers and a 12-week chart).

A module of its own, outside the ``admin`` package: the admin app imports the site class while it discovers
that package, and a site class inside it would be instantiated twice.

The chart is plain SVG computed here and written by the template: no script, no third-party host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.formats import date_format

from gdpr_requests.requests import selectors
from gdpr_requests.staff.common import DISPLAY_NAMES, with_declared_filters_only
from gdpr_requests.staff.login_security import StaffLoginForm, second_factor_required

CHART_WIDTH = 720
CHART_HEIGHT = 230
MARGIN_LEFT = 40
MARGIN_RIGHT = 10
MARGIN_TOP = 14
MARGIN_BOTTOM = 34


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    series: str
    title: str


@dataclass(frozen=True)
class Tick:
    y: float
    value: int


@dataclass(frozen=True)
class Label:
    x: float
    text: str


def nice_ceiling(value: int, steps: int = 4) -> tuple[int, int]:
    """(top, step): a round axis top at or above ``value``, split into ``steps`` whole-number steps."""
    if value <= 0:
        return steps, 1
    raw = value / steps
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    for multiple in (1, 2, 5, 10):
        step = max(1, multiple * magnitude)
        if step * steps >= value:
            return step * steps, int(step)
    return value, max(1, value // steps)  # pragma: no cover - the loop always returns


def weekly_chart(series: list[selectors.WeekCount]) -> dict[str, Any]:
    """Geometry for a grouped bar chart of received and closed requests per week."""
    plot_width = CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = CHART_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    baseline = MARGIN_TOP + plot_height
    top, step = nice_ceiling(max([0, *(w.received for w in series), *(w.closed for w in series)]))
    group = plot_width / max(1, len(series))
    bar_width = group * 0.34
    bars: list[Bar] = []
    labels: list[Label] = []
    for index, week in enumerate(series):
        left = MARGIN_LEFT + index * group + group * 0.14
        week_label = date_format(week.week_start, "j M")
        for offset, series_name, value in ((0, "received", week.received), (1, "closed", week.closed)):
            height = plot_height * value / top
            bars.append(
                Bar(
                    x=round(left + offset * (bar_width + 2), 1),
                    y=round(baseline - height, 1),
                    width=round(bar_width, 1),
                    height=round(height, 1),
                    value=value,
                    series=series_name,
                    title=f"Week of {week_label}: {value} {series_name}",
                )
            )
        labels.append(Label(x=round(left + bar_width + 1, 1), text=week_label))
    ticks = [Tick(y=round(baseline - plot_height * v / top, 1), value=v) for v in range(0, top + 1, step)]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": MARGIN_LEFT,
        "right": CHART_WIDTH - MARGIN_RIGHT,
        "baseline": baseline,
        "label_y": baseline + 18,
        "bars": bars,
        "labels": labels,
        "ticks": ticks,
        "weeks": series,
        "total_received": sum(w.received for w in series),
        "total_closed": sum(w.closed for w in series),
    }


def overview_links() -> dict[str, str]:
    requests = reverse("admin:gdpr_requests_datasubjectrequest_changelist")
    projects = reverse("admin:gdpr_requests_mixpanelproject_changelist")
    return {
        "requests": requests,
        "overdue": f"{requests}?overdue=yes",
        "due_soon": f"{requests}?due_soon=yes",
        "attention": f"{requests}?attention=yes",
        "awaiting_review": f"{requests}?status__exact=verified",
        "status": f"{requests}?status__exact=",
        "projects": projects,
        "failing": f"{projects}?credential_status__exact=failing",
    }


class PrivacyAdminSite(admin.AdminSite):
    index_template = "admin/gdpr_requests/index.html"
    index_title = "Today's work"

    # With DSR_REQUIRE_STAFF_OTP on, the login page asks for a TOTP token (django-otp's admin login template) and
    # has_permission lets Privacy staff and superusers in only once a device has verified them.
    @property
    def login_form(self) -> Any:  # type: ignore[override]
        return StaffLoginForm if settings.DSR_REQUIRE_STAFF_OTP else None

    @property
    def login_template(self) -> str | None:  # type: ignore[override]
        return "otp/admin111/login.html" if settings.DSR_REQUIRE_STAFF_OTP else None

    def has_permission(self, request: HttpRequest) -> bool:
        if not super().has_permission(request):
            return False
        if second_factor_required(request.user):
            # is_verified comes from django_otp's OTPMiddleware: true once this session signed in with a token.
            return bool(getattr(request.user, "is_verified", lambda: False)())
        return True

    @property
    def site_header(self) -> str:  # type: ignore[override]
        return f"{settings.ORGANISATION_NAME} · privacy requests"

    @property
    def site_title(self) -> str:  # type: ignore[override]
        return "Privacy requests"

    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        # Every admin on this site, contrib apps' (users, groups) and third-party ones included, filters only
        # through its declared filters: see staff.common.DeclaredFiltersOnly.
        super().register(model_or_iterable, with_declared_filters_only(admin_class or admin.ModelAdmin), **options)

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        apps = super().get_app_list(request, app_label)
        for app in apps:
            for model in app["models"]:
                if model["object_name"].lower() in DISPLAY_NAMES:
                    model["name"] = DISPLAY_NAMES[model["object_name"].lower()][1]
        return apps

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        context = dict(extra_context or {})
        if request.user.has_perm("gdpr_requests.view_datasubjectrequest"):
            context["overview"] = selectors.overview()
            context["chart"] = weekly_chart(selectors.weekly_received_closed())
            context["overview_links"] = overview_links()
            context["due_soon_days"] = selectors.DUE_SOON_DAYS
        return super().index(request, context)
