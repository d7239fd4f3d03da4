"""Settings for the privacy request manager, read from the environment.

Development (the default) runs with no services: SQLite and Celery's filesystem broker under ``var/``,
emails written to ``var/mail/``, the built-in Mixpanel sandbox. ``DJANGO_ENV=production`` refuses to start
with a missing or unsafe secret; every variable is listed in ``.env.example`` and the README.
"""

from __future__ import annotations

import base64
import hashlib
import math
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "production"}:
    raise ImproperlyConfigured("DJANGO_ENV must be 'development' or 'production'.")
PRODUCTION = DJANGO_ENV == "production"

VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Development-only values. They are public (they are in this file), so production refuses them.
_DEV_SECRET_KEY = "dev-only-secret-key-not-for-production-0123456789abcdefghijklmnopqrstuvwxyz"
_DEV_FERNET_KEY = base64.urlsafe_b64encode(hashlib.sha256(b"dev-only-field-key").digest()).decode()
_DEV_AUDIT_KEY = "dev-only-audit-chain-key-not-for-production"


def _required_secret(name: str, dev_default: str, *, min_length: int) -> str:
    value = env.str(name, default="")
    if not PRODUCTION:
        return value or dev_default
    if not value:
        raise ImproperlyConfigured(f"{name} must be set when DJANGO_ENV=production.")
    if value == dev_default or value.startswith(("dev-only", "django-insecure")) or len(value) < min_length:
        raise ImproperlyConfigured(f"{name} is unsafe: use a random value of at least {min_length} characters.")
    return value


def _positive_seconds(name: str, raw: str) -> float:
    """``raw`` (the variable's text) as a positive, finite number of seconds, or a start-up error naming it.

    django-environ's float() drops every character that is not a digit, sign or point, so "5m" would quietly
    become 5 and "abc" a bare ValueError that does not say which variable: this reads the text itself.
    """
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ImproperlyConfigured(f"{name} must be a positive number of seconds, not {raw!r}.")
    return value


SECRET_KEY = _required_secret("DJANGO_SECRET_KEY", _DEV_SECRET_KEY, min_length=50)
DEBUG = env.bool("DJANGO_DEBUG", default=not PRODUCTION)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DJANGO_DEBUG must be off when DJANGO_ENV=production.")

ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=[] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"]
)
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DJANGO_ENV=production.")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Public base URL used in emails (links to status, verification and download pages).
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
ORGANISATION_NAME = env.str("ORGANISATION_NAME", default="Example Ltd")
PRIVACY_CONTACT_EMAIL = env.str("PRIVACY_CONTACT_EMAIL", default="privacy@example.com")
# The organisation's privacy notice; the portal links to it, and leaves the sentence out when it is unset.
PRIVACY_NOTICE_URL = env.str("PRIVACY_NOTICE_URL", default="")
# What GDPR Art. 15 says a copy of someone's data must come with, in the README.txt and index.html of each access
# export (requests/readable_export.py). Unset, the export tells the person to ask PRIVACY_CONTACT_EMAIL.
DSR_ART15_PURPOSES = env.str("DSR_ART15_PURPOSES", default="")
DSR_ART15_RECIPIENTS = env.str("DSR_ART15_RECIPIENTS", default="")
DSR_ART15_RETENTION = env.str("DSR_ART15_RETENTION", default="")
DSR_ART15_SOURCE = env.str("DSR_ART15_SOURCE", default="")
DSR_ART15_COMPLAINT = env.str("DSR_ART15_COMPLAINT", default="")

INSTALLED_APPS = [
    # The stock admin with our site class (the staff overview on the index): gdpr_requests/admin_config.py.
    "gdpr_requests.staff.apps.PrivacyAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "gdpr_requests",
]

MIDDLEWARE = [
    # Health, readiness and token-guarded metrics, answered before host validation (probes come by IP).
    "gdpr_requests.ops.middleware.ProbeMiddleware",
    # Bodies over DSR_MAX_BODY_BYTES get a 413 before anything parses them (no form takes files).
    "gdpr_requests.portal.middleware.MaxBodySizeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The public side follows the visitor's language (cookie, then Accept-Language); staff pages stay English.
    "gdpr_requests.portal.middleware.PublicLocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Staff pages and reports show times in the viewer's own time zone (a cookie the page's script sets).
    "gdpr_requests.staff.timezones.StaffTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "gdpr_requests.ops.middleware.SecurityHeadersMiddleware",
]

ROOT_URLCONF = "compliance.urls"
WSGI_APPLICATION = "compliance.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "gdpr_requests.ops.context_processors.site",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Without IMMEDIATE transactions and WAL, a web process and a worker that both read-then-write inside
    # atomic() get "database is locked" at once (docs/stack-notes.md).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000",
    }
    # A file, not memory, so that Celery worker subprocesses in tests see the same test database; one per test
    # run (the name is inherited by the run's subprocesses through the environment), so runs can overlap.
    import os

    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.setdefault("DSR_TEST_DB_NAME", str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3"))
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache, broker -----------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's RedisCache, with one client object per server and one-round-trip rate-limit counters.
            "BACKEND": "gdpr_requests.cache.RedisCache",
            "LOCATION": REDIS_URL,
            # Fail fast when Redis is down instead of holding a web worker for redis-py's default timeouts.
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
    # Staff sessions read from Redis and survive its loss (or a flush) because they are written to the DB too.
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "dsr"}}

CELERY_DATA_DIR = VAR_DIR / "celery"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or REDIS_URL or "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _sub in ("queue", "processed", "control"):
        (CELERY_DATA_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_DATA_DIR / "queue"),
        "data_folder_out": str(CELERY_DATA_DIR / "queue"),
        "processed_folder": str(CELERY_DATA_DIR / "processed"),
        "control_folder": str(CELERY_DATA_DIR / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith("redis"):
    # Must exceed the longest task time limit, or a slow task is redelivered while it still runs.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}

# --- Passwords, sessions, security --------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# A friendly page (not Django's debug text) when a form's CSRF check fails, e.g. after cookies were cleared.
CSRF_FAILURE_VIEW = "gdpr_requests.portal.views.csrf_failure"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    # Probes and scrapers talk to gunicorn directly over the internal network, without TLS.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

# --- Secrets at rest, audit chain ---------------------------------------------------------------------
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])
if PRODUCTION:
    if not FIELD_ENCRYPTION_KEYS:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS must be set when DJANGO_ENV=production.")
    if _DEV_FERNET_KEY in FIELD_ENCRYPTION_KEYS:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS contains the development key.")
elif not FIELD_ENCRYPTION_KEYS:
    FIELD_ENCRYPTION_KEYS = [_DEV_FERNET_KEY]

AUDIT_CHAIN_KEY = _required_secret("AUDIT_CHAIN_KEY", _DEV_AUDIT_KEY, min_length=32)
# Keyed hash of requester emails (lookup and duplicate detection without clear text). It must outlive every
# request, like the chain key, so it is derived from it unless set on its own.
EMAIL_HASH_KEY = (
    env.str("EMAIL_HASH_KEY", default="") or hashlib.sha256(b"email-lookup:" + AUDIT_CHAIN_KEY.encode()).hexdigest()
)

# --- Email --------------------------------------------------------------------------------------------
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.smtp.EmailBackend"
    if PRODUCTION
    else "django.core.mail.backends.filebased.EmailBackend",
)
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default=str(VAR_DIR / "mail"))
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="privacy@example.com")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Where staff alerts go besides the members of the "Privacy staff" group.
STAFF_ALERT_EMAILS = env.list("STAFF_ALERT_EMAILS", default=[])

# --- Files --------------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Subject exports are personal data: kept outside any web-served folder and only streamed by a view.
EXPORTS_DIR = Path(env.str("EXPORTS_DIR", default=str(VAR_DIR / "exports")))
MEDIA_ROOT = VAR_DIR / "media"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# The languages of the public portal and of the emails to data subjects (catalogs in locale/, .mo committed).
# The staff admin and the auditor reports stay in LANGUAGE_CODE.
LANGUAGES = [
    ("en", "English"),
    ("de", "Deutsch"),
    ("fr", "Français"),
    ("es", "Español"),
    ("it", "Italiano"),
    ("nl", "Nederlands"),
    ("pt", "Português"),
    ("pl", "Polski"),
]
LOCALE_PATHS = [BASE_DIR / "locale"]
# English dates as "2 December 2026" (Django's "en" would write "Dec. 2, 2026").
FORMAT_MODULE_PATH = ["compliance.formats"]
LANGUAGE_COOKIE_SAMESITE = "Lax"
LANGUAGE_COOKIE_HTTPONLY = True  # only the server reads it
LANGUAGE_COOKIE_SECURE = PRODUCTION

# --- Product behaviour --------------------------------------------------------------------------------
DSR_VERIFICATION_HOURS = env.int("DSR_VERIFICATION_HOURS", default=48)
DSR_UNVERIFIED_EXPIRY_DAYS = env.int("DSR_UNVERIFIED_EXPIRY_DAYS", default=14)
DSR_EXPORT_DAYS = env.int("DSR_EXPORT_DAYS", default=30)
DSR_RETENTION_DAYS = env.int("DSR_RETENTION_DAYS", default=365)
DSR_AUTO_APPROVE_ACCESS = env.bool("DSR_AUTO_APPROVE_ACCESS", default=False)
# A first approval of a deletion that needs two approvers lapses after this many hours without its pair.
DSR_APPROVAL_EXPIRY_HOURS = env.int("DSR_APPROVAL_EXPIRY_HOURS", default=72)
DSR_DUPLICATE_WINDOW_DAYS = env.int("DSR_DUPLICATE_WINDOW_DAYS", default=30)
DSR_STUCK_HOURS = env.int("DSR_STUCK_HOURS", default=72)
DSR_STATUS_LINK_DAYS = env.int("DSR_STATUS_LINK_DAYS", default=400)
DSR_PUBLIC_RATE_LIMITS_ENABLED = env.bool("DSR_PUBLIC_RATE_LIMITS_ENABLED", default=True)
# Behind N reverse proxies, the portal's rate limits key on the Nth address from the right of X-Forwarded-For.
DSR_TRUSTED_PROXY_HOPS = env.int("DSR_TRUSTED_PROXY_HOPS", default=0)
# Request bodies over this many bytes are refused with a 413 (portal/middleware.py): no form takes files and
# the admin's posts are a few kilobytes. Django's own limits follow it, so an accepted body stays in memory.
DSR_MAX_BODY_BYTES = env.int("DSR_MAX_BODY_BYTES", default=64 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = DSR_MAX_BODY_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = DSR_MAX_BODY_BYTES

# Mixpanel cohort sync intake (gdpr_requests/cohorts, docs/cohorts.md): a page of 1,000 members is a few hundred
# KiB, so its webhook has its own body limit; a member is taken again only after this many days.
COHORT_MAX_BODY_BYTES = env.int("COHORT_MAX_BODY_BYTES", default=4 * 1024 * 1024)
COHORT_REPEAT_DAYS = env.int("COHORT_REPEAT_DAYS", default=30)
COHORT_PASSWORD_GRACE_HOURS = env.int("COHORT_PASSWORD_GRACE_HOURS", default=72)
# Failed authentications per intake and minute before only an already-checked password is let in (429 otherwise).
COHORT_AUTH_FAILURES_PER_MINUTE = env.int("COHORT_AUTH_FAILURES_PER_MINUTE", default=20)

# --- Mixpanel -----------------------------------------------------------------------------------------
MIXPANEL_INTEGRATION_ID = env.str("MIXPANEL_INTEGRATION_ID", default="privacy-request-manager")
MIXPANEL_HTTP_TIMEOUT_SECONDS = env.float("MIXPANEL_HTTP_TIMEOUT_SECONDS", default=30.0)
MIXPANEL_MIN_INTERVAL_SECONDS = env.float("MIXPANEL_MIN_INTERVAL_SECONDS", default=1.0)
MIXPANEL_MAX_ATTEMPTS = env.int("MIXPANEL_MAX_ATTEMPTS", default=12)
MIXPANEL_BACKOFF_BASE_SECONDS = env.float("MIXPANEL_BACKOFF_BASE_SECONDS", default=30.0)
MIXPANEL_BACKOFF_MAX_SECONDS = env.float("MIXPANEL_BACKOFF_MAX_SECONDS", default=6 * 3600.0)
MIXPANEL_EXPORT_MAX_BYTES = env.int("MIXPANEL_EXPORT_MAX_BYTES", default=500 * 1024 * 1024)
MIXPANEL_SANDBOX_ENABLED = env.bool("MIXPANEL_SANDBOX_ENABLED", default=not PRODUCTION)
if MIXPANEL_SANDBOX_ENABLED:
    # A simulator that answers as Mixpanel would has no place where real requests are carried out.
    if PRODUCTION:
        raise ImproperlyConfigured("MIXPANEL_SANDBOX_ENABLED must be off when DJANGO_ENV=production.")
    INSTALLED_APPS.append("mixpanel_sandbox")
MIXPANEL_SANDBOX_STEP_SECONDS = env.float("MIXPANEL_SANDBOX_STEP_SECONDS", default=3.0)
MIXPANEL_SANDBOX_RATE_LIMIT = env.bool("MIXPANEL_SANDBOX_RATE_LIMIT", default=True)
MIXPANEL_SANDBOX_FAULT_429 = env.float("MIXPANEL_SANDBOX_FAULT_429", default=0.0)
MIXPANEL_SANDBOX_FAULT_5XX = env.float("MIXPANEL_SANDBOX_FAULT_5XX", default=0.0)
MIXPANEL_SANDBOX_FAULT_SLOW = env.float("MIXPANEL_SANDBOX_FAULT_SLOW", default=0.0)
MIXPANEL_SANDBOX_FAULT_FAILURE = env.float("MIXPANEL_SANDBOX_FAULT_FAILURE", default=0.0)
GDPR_DISPATCH_INTERVAL_SECONDS = env.float("GDPR_DISPATCH_INTERVAL_SECONDS", default=5.0)
GDPR_POLL_INITIAL_SECONDS = env.float("GDPR_POLL_INITIAL_SECONDS", default=300.0)
GDPR_POLL_MAX_SECONDS = env.float("GDPR_POLL_MAX_SECONDS", default=21600.0)
# Pipeline: a deletion task that is not yet full waits this long for more approved requests to join it.
GDPR_DELETION_COALESCE_SECONDS = env.float("GDPR_DELETION_COALESCE_SECONDS", default=30.0)
# Pipeline: a deletion batch Mixpanel reports as FAILURE is resubmitted in this many parts (at least 2).
GDPR_FAILURE_SPLIT_WAYS = env.int("GDPR_FAILURE_SPLIT_WAYS", default=8)
# Pipeline leases. A step holds its task this long: longer than the Celery hard time limit, so a live step never
# loses it to a second worker, while a crashed worker's task becomes due again once it runs out.
GDPR_STEP_LEASE_SECONDS = _positive_seconds(
    "GDPR_STEP_LEASE_SECONDS", env.str("GDPR_STEP_LEASE_SECONDS", default="300")
)
# A sweep's claim on a task it queued: if the broker loses the message, the first sweep after this finds the row.
GDPR_DISPATCH_LEASE_SECONDS = _positive_seconds(
    "GDPR_DISPATCH_LEASE_SECONDS", env.str("GDPR_DISPATCH_LEASE_SECONDS", default="60")
)
# Pipeline: checks on a retrieval's result archive (gdpr_requests/mixpanel/archive.py).
MIXPANEL_EXPORT_MAX_ENTRIES = env.int("MIXPANEL_EXPORT_MAX_ENTRIES", default=10000)
MIXPANEL_EXPORT_MAX_UNCOMPRESSED_BYTES = env.int("MIXPANEL_EXPORT_MAX_UNCOMPRESSED_BYTES", default=2 * 1024**3)
MIXPANEL_EXPORT_MAX_RATIO = env.float("MIXPANEL_EXPORT_MAX_RATIO", default=200.0)
CREDENTIAL_EXPIRY_WARNING_DAYS = (30, 7, 1)

METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# Fonts embedded in PDF reports (Debian: fonts-dejavu-core, fonts-droid-fallback for CJK).
REPORTS_FONT_DIR = env.str("REPORTS_FONT_DIR", default="/usr/share/fonts/truetype/dejavu")
REPORTS_FALLBACK_FONT = env.str(
    "REPORTS_FALLBACK_FONT", default="/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"
)

# --- Celery -------------------------------------------------------------------------------------------
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SOFT_TIME_LIMIT = 120
CELERY_TASK_TIME_LIMIT = 180
if PRODUCTION and GDPR_STEP_LEASE_SECONDS <= CELERY_TASK_TIME_LIMIT:
    # A shorter lease lets a second worker take a task whose step is still running (two creates, two downloads).
    raise ImproperlyConfigured(
        f"GDPR_STEP_LEASE_SECONDS must be longer than the Celery hard time limit ({CELERY_TASK_TIME_LIMIT} s) "
        "when DJANGO_ENV=production."
    )
# Message priorities on the one queue every worker consumes: 0 for the dispatch sweep and Mixpanel steps, 9 for
# planning, 3 for everything else, so a bulk approval's planning cannot hold back Mixpanel calls. Why and how, and
# the alternatives weighed: docs/decisions/celery-message-priorities.md. The filesystem broker ignores them.
CELERY_TASK_ROUTES = {
    "gdpr_requests.tasks.dispatch_due_tasks": {"priority": 0},
    "gdpr_requests.tasks.run_mixpanel_task": {"priority": 0},
    "gdpr_requests.tasks.plan_request": {"priority": 9},
    "gdpr_requests.tasks.plan_requests": {"priority": 9},
    "gdpr_requests.tasks.plan_approved_requests": {"priority": 9},
    # Without a priority a message would get kombu's default, 0, and queue among the steps.
    "*": {"priority": 3},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Tasks are idempotent and acks_late: on a broker connection loss, cancel them and let them be redelivered.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "dispatch-due-mixpanel-tasks": {
        "task": "gdpr_requests.tasks.dispatch_due_tasks",
        "schedule": GDPR_DISPATCH_INTERVAL_SECONDS,
    },
    "plan-approved-requests": {
        "task": "gdpr_requests.tasks.plan_approved_requests",
        "schedule": GDPR_DISPATCH_INTERVAL_SECONDS,
    },
    # A big batch's requests settle in chunk messages; this makes up for any the broker lost.
    "settle-finished-requests": {"task": "gdpr_requests.tasks.settle_finished_requests", "schedule": 300.0},
    "expire-unverified-requests": {"task": "gdpr_requests.tasks.expire_unverified_requests", "schedule": 3600.0},
    "send-pending-subject-emails": {
        "task": "gdpr_requests.tasks.send_pending_subject_notifications",
        "schedule": 300.0,
    },
    "delete-expired-exports": {"task": "gdpr_requests.tasks.delete_expired_exports", "schedule": 3600.0},
    "staff-alerts": {"task": "gdpr_requests.tasks.send_staff_alerts", "schedule": 900.0},
    "staff-daily-digest": {"task": "gdpr_requests.tasks.send_staff_digest", "schedule": 24 * 3600.0},
    "credential-expiry-warnings": {"task": "gdpr_requests.tasks.warn_expiring_credentials", "schedule": 6 * 3600.0},
    "retention-purge": {"task": "gdpr_requests.tasks.purge_retained_personal_data", "schedule": 24 * 3600.0},
}
# Deep readiness (/readyz?deep) reports beat as stopped after three intervals without this (ops/heartbeat.py).
CELERY_BEAT_SCHEDULE["beat-heartbeat"] = {"task": "gdpr_requests.tasks.beat_heartbeat", "schedule": 60.0}

# --- Logging: no personal data ever (use the request reference) -----------------------------------------
LOG_FORMAT = env.str("LOG_FORMAT", default="json" if PRODUCTION else "text")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"()": "gdpr_requests.ops.logging.TextFormatter"},
        "json": {"()": "gdpr_requests.ops.logging.JsonFormatter"},
    },
    # A safety net: email addresses and bearer tokens are redacted from every record this handler writes.
    "filters": {"redact": {"()": "gdpr_requests.ops.logging.RedactFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Replaces Django's default "django" handlers: its console copy would bypass the redaction, and its
        # admin emails would carry request data.
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django.db.backends": {"level": "WARNING"},
        # Every beat tick would otherwise print four lines; task failures still show (WARNING and up).
        "celery.beat": {"level": "WARNING"},
        "celery.app.trace": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
        # The filesystem broker's URL has no host by design; kombu warns about that on every publish.
        "kombu.connection": {"level": "ERROR"},
    },
}

# --- Production needs a shared cache ----------------------------------------------------------------------
# The public rate limits (portal/ratelimit.py) count in the cache. Without Redis each web worker has a cache of
# its own, so every limit would be multiplied by the number of workers.
if PRODUCTION and not REDIS_URL:
    raise ImproperlyConfigured(
        "REDIS_URL must be set when DJANGO_ENV=production: the public rate limits need a cache that every web "
        "worker shares (with a per-process cache each worker counts on its own)."
    )

# --- Staff sign-in: lockout (django-axes) and a second factor (django-otp) ---------------------------------
# A username and address pair is locked for 15 minutes after 5 failed logins; every failure is in the audit
# trail as a keyed hash of the username (gdpr_requests/staff/login_security.py). Privacy staff and superusers
# sign in with a TOTP token when DSR_REQUIRE_STAFF_OTP is on (always, by default, in production).
INSTALLED_APPS += ["django_otp", "django_otp.plugins.otp_totp", "django_otp.plugins.otp_static", "axes"]
# OTPMiddleware after AuthenticationMiddleware (it wraps request.user); AxesMiddleware last.
MIDDLEWARE += ["django_otp.middleware.OTPMiddleware", "axes.middleware.AxesMiddleware"]
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = 0.25  # hours (django-axes reads a number as hours): 15 minutes
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # no start-up banner; the log lines it keeps name clients by AXES_CLIENT_STR_CALLABLE
AXES_CLIENT_IP_CALLABLE = "gdpr_requests.staff.login_security.login_client_ip"  # honours DSR_TRUSTED_PROXY_HOPS
AXES_CLIENT_STR_CALLABLE = "gdpr_requests.staff.login_security.axes_client_str"  # no username or address in logs
AXES_LOCKOUT_TEMPLATE = "admin/gdpr_requests/locked_out.html"
DSR_REQUIRE_STAFF_OTP = env.bool("DSR_REQUIRE_STAFF_OTP", default=PRODUCTION)
if PRODUCTION and not DSR_REQUIRE_STAFF_OTP:
    raise ImproperlyConfigured("DSR_REQUIRE_STAFF_OTP must be on when DJANGO_ENV=production.")
OTP_TOTP_ISSUER = f"{ORGANISATION_NAME} privacy requests"
LOGGING["loggers"]["axes"] = {"level": "WARNING"}  # type: ignore[index]  # one INFO line per login otherwise; failures still show

# --- Identity lookups: Mixpanel's Query API (gdpr_requests/identity; docs/identity.md §1.5) ---------------
# Per project: at most MIXPANEL_QUERY_LIMIT queries in any rolling window, MIXPANEL_QUERY_CONCURRENCY at once.
MIXPANEL_QUERY_LIMIT = env.int("MIXPANEL_QUERY_LIMIT", default=60)
MIXPANEL_QUERY_WINDOW_SECONDS = env.float("MIXPANEL_QUERY_WINDOW_SECONDS", default=3600.0)
MIXPANEL_QUERY_CONCURRENCY = env.int("MIXPANEL_QUERY_CONCURRENCY", default=5)
# Emails per profile query (each asked as typed and lower-cased); the beat tick that coalesces waiting ones.
MIXPANEL_RESOLVE_BATCH = env.int("MIXPANEL_RESOLVE_BATCH", default=25)
MIXPANEL_RESOLVE_INTERVAL_SECONDS = env.float("MIXPANEL_RESOLVE_INTERVAL_SECONDS", default=10.0)
# The sandbox's own query window (default: its 60/hour scaled like its task steps, one hour per 1200 steps).
MIXPANEL_SANDBOX_QUERY_WINDOW_SECONDS = env.float(
    "MIXPANEL_SANDBOX_QUERY_WINDOW_SECONDS", default=MIXPANEL_SANDBOX_STEP_SECONDS * 1200
)
CELERY_BEAT_SCHEDULE["resolve-identities"] = {
    "task": "gdpr_requests.tasks.resolve_identities",
    "schedule": MIXPANEL_RESOLVE_INTERVAL_SECONDS,
}

# --- REST API and webhooks out (gdpr_requests/api, gdpr_requests/webhooks) -------------------------------
INSTALLED_APPS += ["rest_framework", "drf_spectacular", "drf_spectacular_sidecar"]
# Requests per API key (DRF's rate syntax: N/sec, N/min, N/hour), counted in the cache.
API_RATE_LIMIT = env.str("API_RATE_LIMIT", default="600/min")
# The largest JSON body the API reads (a request with 50 distinct ids is a few kilobytes); Django's own
# DATA_UPLOAD_MAX_MEMORY_SIZE (DSR_MAX_BODY_BYTES) caps what any view reads, so this is at most that.
API_MAX_BODY_BYTES = min(env.int("API_MAX_BODY_BYTES", default=64 * 1024), DSR_MAX_BODY_BYTES)
import re  # noqa: E402 - only this block needs it

if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", API_RATE_LIMIT):
    raise ImproperlyConfigured(
        f"API_RATE_LIMIT must read like '600/min' (N/sec, N/min, N/hour, N/day), not {API_RATE_LIMIT!r}."
    )
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["gdpr_requests.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["gdpr_requests.api.permissions.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["gdpr_requests.api.throttling.ApiKeyRateThrottle"],
    # JSON only: the browsable API would need inline scripts the site's CSP refuses.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["gdpr_requests.api.parsers.SafeJSONParser"],
    "EXCEPTION_HANDLER": "gdpr_requests.api.errors.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Privacy request manager API",
    "DESCRIPTION": "Intake and status of privacy requests, and the audit trail, for the product's own systems.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Served from the drf-spectacular-sidecar package through staticfiles: no CDN, within script-src 'self'.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
# Webhook URLs must be https and resolve only to public addresses (checked on save and again at connect time);
# always in production. WEBHOOK_ALLOWED_HOSTS are exempt (the demo and tests use loopback receivers).
WEBHOOK_SSRF_CHECKS = PRODUCTION or env.bool("WEBHOOK_SSRF_CHECKS", default=False)
WEBHOOK_ALLOWED_HOSTS = env.list("WEBHOOK_ALLOWED_HOSTS", default=[])
WEBHOOK_TIMEOUT_SECONDS = _positive_seconds("WEBHOOK_TIMEOUT_SECONDS", env.str("WEBHOOK_TIMEOUT_SECONDS", default="5"))
CELERY_BEAT_SCHEDULE["webhook-deliveries-due"] = {"task": "gdpr_requests.tasks.send_due_webhooks", "schedule": 30.0}
CELERY_BEAT_SCHEDULE["api-idempotency-purge"] = {
    "task": "gdpr_requests.tasks.purge_idempotency_records",
    "schedule": 3600.0,
}
CELERY_BEAT_SCHEDULE["webhook-overdue-requests"] = {
    "task": "gdpr_requests.tasks.announce_overdue_requests",
    "schedule": 3600.0,
}
