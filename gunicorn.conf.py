"""gunicorn settings for the web processes (``gunicorn compliance.wsgi -c gunicorn.conf.py``).

Everything can be overridden from the environment (see the README's Production section). Threaded workers by
default: while one thread waits for PostgreSQL another serves, and form submissions that arrive together in one
process share one transaction (gdpr_requests/group_commit.py), which is what lets the public form keep up
under load (benchmarks/README.md has the figures for 1, 2, 4, 8 and 12 threads).
"""

from __future__ import annotations

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
# CPUs + 1 processes, at most 5: threads (below) give the concurrency, and each thread of each process may keep
# a PostgreSQL connection open (CONN_MAX_AGE).
workers = int(os.environ.get("WEB_CONCURRENCY", min(multiprocessing.cpu_count() + 1, 5)))
# Threads per worker (GUNICORN_THREADS=1 gives sync workers). Each thread holds its own database connection:
# plan PostgreSQL's max_connections for WEB_CONCURRENCY x GUNICORN_THREADS per web host.
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then so that a slow leak cannot grow for ever; jitter keeps them from all
# restarting at once.
max_requests = 2000
max_requests_jitter = 200
# The app's own middleware and database connections are not fork-safe to share: load it in each worker.
preload_app = False
# Heartbeat files on a RAM disk: a container's overlay filesystem can stall them and get workers killed.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - heartbeat files only
# Only a reverse proxy on these addresses may set X-Forwarded-Proto (Django's SECURE_PROXY_SSL_HEADER).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# No access log: paths carry signed verification and download links. Errors and the app's own logs (with
# references, never personal data) go to stderr, JSON in production like the app's.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
_production = os.environ.get("DJANGO_ENV", "development") == "production"
_format = os.environ.get("LOG_FORMAT", "json" if _production else "text")
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "gdpr_requests.ops.logging.JsonFormatter"},
        "text": {"()": "gdpr_requests.ops.logging.TextFormatter"},
    },
    "filters": {"redact": {"()": "gdpr_requests.ops.logging.RedactFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": _format,
            "filters": ["redact"],
            "stream": "ext://sys.stderr",
        }
    },
    "loggers": {
        "gunicorn.error": {"handlers": ["console"], "level": loglevel.upper(), "propagate": False},
        "gunicorn.access": {"handlers": [], "propagate": False},
    },
}
