"""English dates as the public pages and emails wrote them before i18n: "2 December 2026"."""

DATE_FORMAT = "j F Y"
SHORT_DATE_FORMAT = "j M Y"
