"""Portal settings, read from the environment (see README "Configuration")."""

import sys
from pathlib import Path

import dj_database_url

from portal.env import env_bool, env_int, env_list, env_str, local_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PORTAL_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "") or local_secret_key(VAR_DIR)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "portal",
    "escalation",
    "gates",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

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
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"), conn_max_age=0)
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["OPTIONS"] = {}
    # django-q2's qcluster forks its processes after Django has opened the database: a psycopg pool
    # would be shared across the fork and break (django-q2/django-q2#209). The worker runs without one.
    if env_bool("PORTAL_DB_POOL", sys.argv[1:2] != ["qcluster"]):
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": 1,
            "max_size": env_int("PORTAL_DB_POOL_MAX", 20, minimum=1),
            "timeout": 10,
        }
    # Django's cursors bind on the client and never prepare; with a threshold set, the statements that
    # ingestion runs per event (escalation.services.statements.prepared_cursor) prepare on first use.
    if env_bool("PORTAL_DB_PREPARE", True):
        DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 1
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # One web server and one worker share the file: wait for locks and take them up front.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise serves from here and from the finders
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "admin:login"

# The portal's own settings.
PORTAL_BASE_URL = env_str("PORTAL_BASE_URL", "http://localhost:8000").rstrip("/")
PORTAL_MAX_EVENT_BYTES = env_int("PORTAL_MAX_EVENT_BYTES", 1024 * 1024, minimum=1024)
PORTAL_LOG_EXCERPT_LIMIT = env_int("PORTAL_LOG_EXCERPT_LIMIT", 64 * 1024, minimum=256)
PORTAL_TRIAGE_MINUTES = env_int("PORTAL_TRIAGE_MINUTES", 15, minimum=1)
PORTAL_CONFIG_CACHE_SECONDS = env_int("PORTAL_CONFIG_CACHE_SECONDS", 5)
PORTAL_RULE_TRIAL_MS = env_int("PORTAL_RULE_TRIAL_MS", 250, minimum=1)
PORTAL_RULE_PREVIEW_DAYS = env_int("PORTAL_RULE_PREVIEW_DAYS", 30, minimum=1)
PORTAL_RULE_SYNC_LIMIT = env_int("PORTAL_RULE_SYNC_LIMIT", 2000)
PORTAL_MAX_REPORT_BYTES = env_int("PORTAL_MAX_REPORT_BYTES", 25 * 1024 * 1024, minimum=1024)
PORTAL_MAX_WEBHOOK_BYTES = env_int("PORTAL_MAX_WEBHOOK_BYTES", 5 * 1024 * 1024, minimum=1024)
# Notification delivery: HTTP timeout (s) of every outbound call, retry backoff base (s, doubling, capped at 1 h),
# attempts before an outbox entry becomes a dead letter.
PORTAL_HTTP_TIMEOUT = env_int("PORTAL_HTTP_TIMEOUT", 10, minimum=1)
PORTAL_NOTIFY_BACKOFF_SECONDS = env_int("PORTAL_NOTIFY_BACKOFF_SECONDS", 30, minimum=1)
PORTAL_NOTIFY_MAX_ATTEMPTS = env_int("PORTAL_NOTIFY_MAX_ATTEMPTS", 8, minimum=1)
PORTAL_ENGINE_HEARTBEAT_STALE_SECONDS = env_int("PORTAL_ENGINE_HEARTBEAT_STALE_SECONDS", 120, minimum=1)
PORTAL_ENGINE_SWEEP_STALE_SECONDS = env_int("PORTAL_ENGINE_SWEEP_STALE_SECONDS", 300, minimum=1)
# The sla-sweep task (every minute) keeps sweeping this long, every PORTAL_SWEEP_INTERVAL_SECONDS, so a
# step is taken seconds after it comes due rather than up to a minute later; 0 sweeps once per task.
PORTAL_SWEEP_LOOP_SECONDS = env_int("PORTAL_SWEEP_LOOP_SECONDS", 58)
PORTAL_SWEEP_INTERVAL_SECONDS = env_int("PORTAL_SWEEP_INTERVAL_SECONDS", 5, minimum=1)
# Threads, each on its own connection, that sweep batches at once (PostgreSQL): one builds rows while
# the database writes another's.
PORTAL_SWEEP_WORKERS = env_int("PORTAL_SWEEP_WORKERS", 2, minimum=1)

# E-mail channels send through Django's SMTP backend.
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "ci-portal@localhost")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "escalation.api.authentication.SourceTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["portal.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "portal.pagination.PortalPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "CI escalation and quality-gate portal",
    "DESCRIPTION": "CI systems report outcomes here; the portal classifies, routes and escalates failures.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "FailureStatusEnum": "escalation.choices.FailureStatus",
        "JobStatusEnum": "escalation.choices.JobStatus",
    },
}

Q_CLUSTER = {
    "name": "portal",
    "orm": "default",
    "workers": env_int("PORTAL_WORKERS", 2, minimum=1),  # the SLA sweep keeps one busy most of each minute
    "timeout": 120,
    "retry": 180,
    "max_attempts": 3,
    "catch_up": False,
    "label": "Tasks",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("PORTAL_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
