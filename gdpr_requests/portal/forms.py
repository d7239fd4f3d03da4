"""Public portal forms: the request form, the "send me a new link" form and the download code form.

Every error message names its field in plain words (a screen reader reads the message, not the layout), and
rate limits are counted inside validation (``clean``) so no view can forget them: PublicRateLimited propagates out
of ``is_valid()`` and the view answers with the 429 page. The honeypot field is accepted but flags the form
as a bot's (``is_bot``), so a bot sees the same neutral page as a person and nothing is created.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from django import forms
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from gdpr_requests.models import DisclosureType, Regulation, RequestKind
from gdpr_requests.portal import ratelimit as ratelimit_public
from gdpr_requests.requests import services

EEA_UK = "eea_uk"
CALIFORNIA = "california"
ELSEWHERE = "elsewhere"
RESIDENCE_CHOICES = [
    (EEA_UK, gettext_lazy("The European Union, the EEA or the United Kingdom")),
    (CALIFORNIA, gettext_lazy("California, United States")),
    (ELSEWHERE, gettext_lazy("Somewhere else")),
]
# Where the person lives decides the law we answer under; outside California we apply the GDPR's standard.
REGULATION_FOR_RESIDENCE = {EEA_UK: Regulation.GDPR, CALIFORNIA: Regulation.CCPA, ELSEWHERE: Regulation.GDPR}

KIND_CHOICES = [
    (RequestKind.ACCESS, gettext_lazy("Get a copy of my data")),
    (RequestKind.DELETION, gettext_lazy("Delete my data")),
]
DISCLOSURE_CHOICES = [
    (DisclosureType.DATA, gettext_lazy("The specific pieces of personal information you hold about me")),
    (DisclosureType.CATEGORIES, gettext_lazy("The categories of personal information you hold about me")),
    (DisclosureType.SOURCES, gettext_lazy("Where you got my personal information from")),
]

NAME_MAX = 200
EMAIL_MAX = 254
MESSAGE_MAX = 2000
USER_IDS_MAX = 5000
HONEYPOT = "website"


def _messages(
    *,
    required: Promise | None = None,
    invalid: Promise | None = None,
    max_length: Promise | None = None,
    null: Promise | None = None,
    choice: Promise | None = None,
) -> dict[str, Promise]:
    """Error messages for one field, each naming it (Django's defaults say "This field"). Each is a whole
    sentence to translate: a noun slotted into a shared sentence would not decline in German or Polish."""
    keys = {
        "required": required,
        "invalid": invalid,
        "max_length": max_length,
        "null_characters_not_allowed": null,
        "invalid_choice": choice,
    }
    return {key: message for key, message in keys.items() if message is not None}


def _has_control_characters(value: str, *, allow_newlines: bool = False) -> bool:
    allowed = {"\n", "\r", "\t"} if allow_newlines else set()
    return any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in value)


# Characters that reorder the text around them: in an email or the admin they can make "moc.live" read as
# "evil.com", or hide what follows.
BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# A web address in a name: a scheme, "www.", or a dotted host ending in a top-level domain ("evil.example/reset").
# A dot followed by a space ("J. R. Smith") or by a single letter ("J.R. Smith") is not one.
LINK_PATTERN = re.compile(
    r"(?i)(?:[a-z][a-z0-9+.-]*://|\bwww\.|[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,63}(?![\w-])(?:[/:?#]|$|\s|,|\)))"
)


def _has_bidi_controls(value: str) -> bool:
    return any(ch in BIDI_CONTROLS for ch in value)


class HoneypotField(forms.Field):
    """Never invalid, whatever a bot puts in it: an error would tell the bot what we check."""

    def clean(self, value: Any) -> str:
        return ""


EMAIL_MESSAGES = _messages(
    required=gettext_lazy("Enter your email address."),
    invalid=gettext_lazy("Enter your email address in the right format, like name@example.com."),
    max_length=gettext_lazy(
        "Your email address is too long: use at most %(limit_value)d characters (it has %(show_value)d)."
    ),
    null=gettext_lazy("Your email address contains a character we cannot accept (a null character)."),
)


class PortalForm(forms.Form):
    """Shared behaviour: the client's IP for rate limits, the honeypot, and field nouns for messages."""

    # The words each field's messages use for it (tests check every message names its field).
    nouns: dict[str, str] = {}
    rate_limit_action = ""

    website = HoneypotField(
        label=gettext_lazy("Leave this field empty"),
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "off", "tabindex": "-1"}),
    )

    def __init__(self, *args: Any, client_ip: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.client_ip = client_ip

    @property
    def is_bot(self) -> bool:
        return bool(self.is_bound and self.data.get(HONEYPOT))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.rate_limit_action:
            # Per IP only: a limit per address would let anyone lock its owner out (see ratelimit.py).
            ratelimit_public.check(self.rate_limit_action, ip=self.client_ip)
        return cleaned


class DataRequestForm(PortalForm):
    nouns = {
        "name": "name",
        "email": "email address",
        "kind": "request",
        "residence": "where you live",
        "disclosure_type": "what you want to know",
        "distinct_ids": "user id",
        "message": "message",
    }
    rate_limit_action = "submit"
    # The order the page shows the fields in, which the error summary follows.
    field_order = ["kind", "name", "email", "residence", "disclosure_type", "distinct_ids", "message"]

    name = forms.CharField(
        label=gettext_lazy("Your full name"),
        max_length=NAME_MAX,
        widget=forms.TextInput(attrs={"autocomplete": "name"}),
        error_messages=_messages(
            required=gettext_lazy("Enter your name."),
            max_length=gettext_lazy(
                "Your name is too long: use at most %(limit_value)d characters (it has %(show_value)d)."
            ),
            null=gettext_lazy("Your name contains a character we cannot accept (a null character)."),
        ),
    )
    email = forms.EmailField(
        label=gettext_lazy("Your email address"),
        max_length=EMAIL_MAX,
        help_text=gettext_lazy("We send a link to this address to check it is yours, then keep you updated there."),
        widget=forms.EmailInput(attrs={"autocomplete": "email", "spellcheck": "false"}),
        error_messages=EMAIL_MESSAGES,
    )
    kind = forms.ChoiceField(
        label=gettext_lazy("What would you like us to do?"),
        choices=KIND_CHOICES,
        widget=forms.RadioSelect,
        error_messages=_messages(
            required=gettext_lazy("Choose which request you are making: a copy of your data, or its deletion."),
            choice=gettext_lazy("Choose which request you are making: a copy of your data, or its deletion."),
        ),
    )
    residence = forms.ChoiceField(
        label=gettext_lazy("Where do you live?"),
        choices=RESIDENCE_CHOICES,
        widget=forms.RadioSelect,
        help_text=gettext_lazy("This decides which privacy law we answer under (GDPR or CCPA) and our deadline."),
        error_messages=_messages(
            required=gettext_lazy("Choose where you live."),
            choice=gettext_lazy("Choose where you live from the options."),
        ),
    )
    disclosure_type = forms.ChoiceField(
        label=gettext_lazy("What do you want to know?"),
        choices=DISCLOSURE_CHOICES,
        widget=forms.RadioSelect,
        required=False,
        help_text=gettext_lazy("Only for California residents asking for a copy of their data."),
        error_messages=_messages(
            required=gettext_lazy("Choose what you want to know about your data."),
            choice=gettext_lazy("Choose what you want to know from the options."),
        ),
    )
    distinct_ids = forms.CharField(
        label=gettext_lazy("Your user id (optional)"),
        required=False,
        max_length=USER_IDS_MAX,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "autocapitalize": "off"}),
        help_text=gettext_lazy(
            "The user id you have in our product, if you know it (for example in your account settings). "
            "Put each one on its own line. It helps us find your data faster."
        ),
        error_messages=_messages(
            max_length=gettext_lazy(
                "Your user id is too long: use at most %(limit_value)d characters (it has %(show_value)d)."
            ),
            null=gettext_lazy("Your user id contains a character we cannot accept (a null character)."),
        ),
    )
    message = forms.CharField(
        label=gettext_lazy("Anything else we should know? (optional)"),
        required=False,
        max_length=MESSAGE_MAX,
        widget=forms.Textarea(attrs={"rows": 4}),
        error_messages=_messages(
            max_length=gettext_lazy(
                "Your message is too long: use at most %(limit_value)d characters (it has %(show_value)d)."
            ),
            null=gettext_lazy("Your message contains a character we cannot accept (a null character)."),
        ),
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if _has_control_characters(name):
            raise forms.ValidationError(_("Your name contains a character we cannot accept."), code="invalid")
        if _has_bidi_controls(name):
            raise forms.ValidationError(
                _(
                    "Your name contains a hidden character that changes the direction of text. Type your name "
                    "again without it."
                ),
                code="invalid",
            )
        if LINK_PATTERN.search(name):
            raise forms.ValidationError(
                _(
                    "Your name looks like it contains a web address. Enter only your name (if it has a dot "
                    "between two words, put a space after the dot)."
                ),
                code="invalid",
            )
        return name

    def clean_message(self) -> str:
        message = self.cleaned_data["message"]
        if _has_control_characters(message, allow_newlines=True):
            raise forms.ValidationError(_("Your message contains a character we cannot accept."), code="invalid")
        if _has_bidi_controls(message):
            raise forms.ValidationError(
                _(
                    "Your message contains a hidden character that changes the direction of text. Remove it and "
                    "try again."
                ),
                code="invalid",
            )
        return message

    def clean_distinct_ids(self) -> list[str]:
        lines = [line.strip() for line in self.cleaned_data["distinct_ids"].splitlines()]
        ids = list(dict.fromkeys(line for line in lines if line))
        if any(len(value) > services.MAX_DISTINCT_ID_LENGTH for value in ids):
            raise forms.ValidationError(
                _("Each user id must be at most %(max)d characters long.") % {"max": services.MAX_DISTINCT_ID_LENGTH},
                code="max_length",
            )
        if any(_has_control_characters(value) for value in ids):
            raise forms.ValidationError(_("A user id contains a character we cannot accept."), code="invalid")
        if len(ids) > services.MAX_DISTINCT_IDS:
            raise forms.ValidationError(
                _("Enter at most %(max)d user ids.") % {"max": services.MAX_DISTINCT_IDS}, code="invalid"
            )
        try:
            return services.clean_distinct_ids(ids)
        except services.ServiceError:  # belt and braces: the service's own rules (its words are for staff)
            raise forms.ValidationError(
                _("Check your user id: one of them cannot be accepted as it is."), code="invalid"
            ) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        residence = cleaned.get("residence")
        if residence:
            cleaned["regulation"] = REGULATION_FOR_RESIDENCE[residence]
        if cleaned.get("regulation") == Regulation.CCPA and cleaned.get("kind") == RequestKind.ACCESS:
            if not cleaned.get("disclosure_type") and "disclosure_type" not in self.errors:
                self.add_error(
                    "disclosure_type",
                    forms.ValidationError(_("Choose what you want to know about your data."), code="required"),
                )
        else:
            cleaned["disclosure_type"] = ""
        return cleaned

    def submission(self) -> dict[str, Any]:
        """Keyword arguments for portal_services.request_submit."""
        data = self.cleaned_data
        return {
            "kind": data["kind"],
            "regulation": data["regulation"],
            "email": data["email"],
            "name": data["name"],
            "distinct_ids": data["distinct_ids"],
            "disclosure_type": data["disclosure_type"],
            "message": data["message"],
        }


class ResendLinkForm(PortalForm):
    nouns = {"email": "email address"}
    rate_limit_action = "resend"

    email = forms.EmailField(
        label=gettext_lazy("Your email address"),
        max_length=EMAIL_MAX,
        help_text=gettext_lazy("The address you used for your request."),
        widget=forms.EmailInput(attrs={"autocomplete": "email", "spellcheck": "false"}),
        error_messages=EMAIL_MESSAGES,
    )


class DownloadCodeForm(forms.Form):
    nouns = {"code": "code"}

    code = forms.CharField(
        label=gettext_lazy("Download code"),
        max_length=20,
        help_text=gettext_lazy("The 6-digit code from the email we just sent you."),
        widget=forms.TextInput(
            attrs={"inputmode": "numeric", "autocomplete": "one-time-code", "pattern": "[0-9 ]*", "spellcheck": "false"}
        ),
        error_messages=_messages(
            required=gettext_lazy("Enter the 6-digit code from the email."),
            max_length=gettext_lazy(
                "Your code is too long: use at most %(limit_value)d characters (it has %(show_value)d)."
            ),
            null=gettext_lazy("Your code contains a character we cannot accept (a null character)."),
        ),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def clean_code(self) -> str:
        code = "".join(self.cleaned_data["code"].split())
        if len(code) != 6 or not code.isascii() or not code.isdigit():
            raise forms.ValidationError(_("Enter the code as 6 digits, like 123456."), code="invalid")
        return code
