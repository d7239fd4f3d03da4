"""Settings for benchmark runs only: the product's settings plus a bare view to compare against.

``DJANGO_SETTINGS_MODULE=benchmarks.bench_settings`` serves every product URL and, in addition,
``/bench/bare/`` (a view that does nothing), so the product's URLs never contain a benchmark view.
"""

from __future__ import annotations

import os

from compliance.settings import *  # noqa: F403
from compliance.settings import STATIC_ROOT

ROOT_URLCONF = "benchmarks.bench_urls"
# Static files collected for the run go to a throwaway folder, not the checkout's staticfiles/.
STATIC_ROOT = os.environ.get("BENCH_STATIC_ROOT", str(STATIC_ROOT))
