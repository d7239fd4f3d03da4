"""Change-list filters for the request queue: what is late, what is due, what needs a person."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from gdpr_requests.requests import selectors, states


class _YesNoFilter(admin.SimpleListFilter):
    yes_label = "Yes"
    no_label = "No"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", self.yes_label), ("no", self.no_label)]

    def condition(self) -> Any:
        raise NotImplementedError

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(self.condition())
        if self.value() == "no":
            return queryset.exclude(self.condition())
        return queryset


class OpenFilter(admin.SimpleListFilter):
    """Open requests by default: the queue is what still needs work. A search or a status filter looks at every
    request, so that a closed one can still be found by its reference or email."""

    title = "open or closed"
    parameter_name = "open"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "Open"), ("closed", "Closed"), ("all", "All")]

    def value(self) -> str:
        chosen = super().value()
        if chosen in ("open", "closed", "all"):
            return chosen
        looking_for_one = self.request.GET.get("q") or "status__exact" in self.request.GET
        return "all" if looking_for_one else "open"

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "open":
            return queryset.filter(status__in=states.OPEN_STATES)
        if self.value() == "closed":
            return queryset.filter(status__in=states.FINAL_STATES)
        return queryset

    def choices(self, changelist: Any) -> Any:
        # No separate "All" entry on top: "All" is one of the lookups, and "Open" is the default.
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }


class OverdueFilter(_YesNoFilter):
    title = "overdue"
    parameter_name = "overdue"
    yes_label = "Overdue"
    no_label = "Not overdue"

    def condition(self) -> Any:
        return selectors.overdue_q()


class DueSoonFilter(_YesNoFilter):
    title = f"due within {selectors.DUE_SOON_DAYS} days"
    parameter_name = "due_soon"
    yes_label = f"Due within {selectors.DUE_SOON_DAYS} days"
    no_label = f"Not due within {selectors.DUE_SOON_DAYS} days"

    def condition(self) -> Any:
        return selectors.due_soon_q()


class NeedsAttentionFilter(_YesNoFilter):
    title = "needs attention"
    parameter_name = "attention"
    yes_label = "Needs attention"
    no_label = "Fine"

    def condition(self) -> Any:
        return selectors.needs_attention_q()


class DateRangeFilter(admin.ListFilter):
    """From/to date inputs (both optional, both inclusive) over a datetime field, in local time."""

    template = "admin/gdpr_requests/date_range_filter.html"
    field_name = ""

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        for name in self.expected_parameters():
            if name in params:
                value = params.pop(name)
                self.used_parameters[name] = (value[-1] if isinstance(value, list) else value).strip()

    @property
    def since_param(self) -> str:
        return f"{self.field_name}_from"

    @property
    def until_param(self) -> str:
        return f"{self.field_name}_to"

    def expected_parameters(self) -> list[str]:
        return [self.since_param, self.until_param]

    def has_output(self) -> bool:
        return True

    def _day(self, name: str) -> date | None:
        raw = self.used_parameters.get(name, "")
        if not raw:
            return None
        try:
            return date.fromisoformat(raw)
        except ValueError:
            # The change list turns this into its "invalid filter" notice rather than an error page.
            raise IncorrectLookupParameters(f"{raw!r} is not a date (YYYY-MM-DD).") from None

    @staticmethod
    def _start_of(day: date) -> datetime:
        return timezone.make_aware(datetime.combine(day, datetime.min.time()))

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        since, until = self._day(self.since_param), self._day(self.until_param)
        if since:
            queryset = queryset.filter(**{f"{self.field_name}__gte": self._start_of(since)})
        if until:
            queryset = queryset.filter(**{f"{self.field_name}__lt": self._start_of(until + timedelta(days=1))})
        return queryset

    def choices(self, changelist: Any) -> list[dict[str, Any]]:
        ours = set(self.expected_parameters())
        hidden = [
            (name, value)
            for name, values in self.request.GET.lists()
            if name not in ours and name not in ("p", "e")
            for value in values
        ]
        return [
            {
                "since_param": self.since_param,
                "until_param": self.until_param,
                "since": self.used_parameters.get(self.since_param, ""),
                "until": self.used_parameters.get(self.until_param, ""),
                "hidden": hidden,
                "clear_query_string": changelist.get_query_string(remove=list(ours)),
                "selected": bool(self.used_parameters),
            }
        ]


class ReceivedRangeFilter(DateRangeFilter):
    title = "received date"
    field_name = "received_at"
