"""Production settings: everything in portal.settings plus HTTPS hardening and a required secret key.

Use with DJANGO_SETTINGS_MODULE=portal.settings_production behind a TLS-terminating proxy.
"""

import os

from django.core.exceptions import ImproperlyConfigured

from portal.env import env_bool, env_int
from portal.settings import *  # noqa: F403

if not os.environ.get("DJANGO_SECRET_KEY"):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set in production")
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = False

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("PORTAL_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("PORTAL_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_REFERRER_POLICY = "same-origin"
