"""Settings for benchmarks: the portal's own, plus the bare endpoint's URL (see bench/urls.py)."""

from portal.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
