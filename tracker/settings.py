"""Tracker settings. Everything that differs between deployments comes from the environment.

docs/settings.md lists every variable read here. A bad value stops start-up with
ImproperlyConfigured naming the variable (see tracker/env.py).
"""

import importlib.util
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key
from django.utils.csp import CSP
from django.utils.translation import gettext_lazy as _

from tracker import env

BASE_DIR = Path(__file__).resolve().parent.parent
# The package itself: templates, static files and the catalogue ship inside it (package data).
APP_DIR = Path(__file__).resolve().parent

DEBUG = env.boolean("DJANGO_DEBUG", False)

if DEBUG:
    # Random per process unless the demo exports one, so a forgotten key never ships.
    SECRET_KEY = env.string("DJANGO_SECRET_KEY") or get_random_secret_key()
else:
    SECRET_KEY = env.required("DJANGO_SECRET_KEY", "it signs sessions and CSRF tokens")

ALLOWED_HOSTS = env.csv("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env.csv("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_tasks_db",
    "simple_history",
    "import_export",
    "axes",
    "mozilla_django_oidc",
    "tracker",
]
if DEBUG and importlib.util.find_spec("demo") is not None:
    # Development only, and not in the wheel: the demo data and the demo/d1_sandbox commands.
    INSTALLED_APPS.append("demo")

MIDDLEWARE = [
    "tracker.ops.logs.CorrelationMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # D1's endpoints are answered here, without the staff pages' middleware below.
    "tracker.notifications.D1EndpointsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "tracker.middleware.RefuseNulMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "tracker.middleware.TimezoneMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tracker.login.IdleTimeoutMiddleware",
    "tracker.middleware.HtmxLoginRedirectMiddleware",
    # Login everywhere by default; the D1-facing endpoints and /healthz opt out explicitly.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "tracker.middleware.NoStoreMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "tracker.root_urls"
WSGI_APPLICATION = "tracker.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],  # tracker/templates, found as the app's own (APP_DIRS)
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.template.context_processors.i18n",
                "django.template.context_processors.tz",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite for the demo, PostgreSQL in production and in the test suite.
DATABASE_URL = env.string("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
except ValueError as e:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {e}") from None

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # Web, worker and commands write at once in the demo: wait for the lock instead of
        # failing, and take it up front so two writers never deadlock on an upgrade.
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif env.boolean("DATABASE_POOL", False):
    # psycopg's pool and persistent connections exclude each other.
    DATABASES["default"]["OPTIONS"] = {
        "pool": {"min_size": 2, "max_size": env.integer("DATABASE_POOL_MAX", 10, minimum=1)}
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.integer("DATABASE_CONN_MAX_AGE", 600)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A request waiting on a row lock fails after this long instead of hanging until D1 gives up;
    # the notification endpoint answers 503 and D1 delivers again (0 waits forever).
    _lock_timeout_ms = env.integer("DATABASE_LOCK_TIMEOUT_MS", 5000)
    if _lock_timeout_ms:
        _options = DATABASES["default"].setdefault("OPTIONS", {})
        _options["options"] = (
            f"{_options.get('options', '')} -c lock_timeout={_lock_timeout_ms}".strip()
        )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One cache shared by every process: the D1 token, the breaker and the rate budget live here.
REDIS_URL = env.string("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "tracker_cache",
        }
    }

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"
# Absolute: a session ends this long after sign-in, active or not.
SESSION_COOKIE_AGE = 12 * 3600
# Idle: a session without activity for this long ends (tracker/login.py).
TRACKER_IDLE_TIMEOUT = env.duration("TRACKER_IDLE_TIMEOUT", "30m")
CSRF_COOKIE_HTTPONLY = True  # the pages send the token from <body hx-headers>, not the cookie
LANGUAGE_COOKIE_SAMESITE = "Lax"
LANGUAGE_COOKIE_HTTPONLY = True

# Single sign-on with OpenID Connect (tracker/sso.py, docs/security.md): on when a client id is
# set. With TRACKER_PASSWORD_LOGIN=0 only superusers can still sign in with a password.
OIDC_RP_CLIENT_ID = env.string("OIDC_RP_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = env.string("OIDC_RP_CLIENT_SECRET")
OIDC_OP_AUTHORIZATION_ENDPOINT = env.string("OIDC_OP_AUTHORIZATION_ENDPOINT")
OIDC_OP_TOKEN_ENDPOINT = env.string("OIDC_OP_TOKEN_ENDPOINT")
OIDC_OP_USER_ENDPOINT = env.string("OIDC_OP_USER_ENDPOINT")
OIDC_OP_JWKS_ENDPOINT = env.string("OIDC_OP_JWKS_ENDPOINT")
OIDC_OP_ISSUER = env.string("OIDC_OP_ISSUER")
OIDC_RP_SIGN_ALGO = env.choice("OIDC_RP_SIGN_ALGO", "RS256", ("RS256", "ES256", "HS256"))
OIDC_RP_SCOPES = env.string("OIDC_RP_SCOPES", "openid email profile")
OIDC_TIMEOUT = 10
OIDC_USE_PKCE = True
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso=failed"
OIDC_CREATE_USER = True
TRACKER_OIDC_USERNAME_CLAIM = env.string("TRACKER_OIDC_USERNAME_CLAIM", "preferred_username")
TRACKER_OIDC_GROUPS_CLAIM = env.string("TRACKER_OIDC_GROUPS_CLAIM", "groups")
TRACKER_OIDC_GROUP_MAP = env.mapping("TRACKER_OIDC_GROUP_MAP")
TRACKER_PASSWORD_LOGIN = env.boolean("TRACKER_PASSWORD_LOGIN", True)
if OIDC_RP_CLIENT_ID:
    for _name in (
        "OIDC_RP_CLIENT_SECRET",
        "OIDC_OP_AUTHORIZATION_ENDPOINT",
        "OIDC_OP_TOKEN_ENDPOINT",
    ):
        if not globals()[_name]:
            raise ImproperlyConfigured(f"{_name} must be set when OIDC_RP_CLIENT_ID is")
    if OIDC_RP_SIGN_ALGO != "HS256" and not OIDC_OP_JWKS_ENDPOINT:
        raise ImproperlyConfigured(f"OIDC_OP_JWKS_ENDPOINT must be set for {OIDC_RP_SIGN_ALGO}")
    for _claim, _group in TRACKER_OIDC_GROUP_MAP.items():
        if _group not in ("Support agents", "Supervisors", "Administrators"):
            raise ImproperlyConfigured(
                f"TRACKER_OIDC_GROUP_MAP: {_claim}={_group}, the group must be Support agents, "
                "Supervisors or Administrators"
            )
elif not TRACKER_PASSWORD_LOGIN:
    raise ImproperlyConfigured("TRACKER_PASSWORD_LOGIN=0 needs single sign-on (OIDC_RP_CLIENT_ID)")

# django-axes checks first: a locked-out username or address is refused before any password.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "tracker.permission_cache.CachedPermissionsBackend"
    if TRACKER_PASSWORD_LOGIN
    else "tracker.login.PermissionsOnlyBackend",
    *(["tracker.sso.TrackerOIDCBackend"] if OIDC_RP_CLIENT_ID else []),
]

# Password guessing (django-axes, tracker/login.py): after this many failures in a row a
# username, and separately an address, is locked out until the cool-off ends or an operator
# unlocks it (`manage.py axes_reset_username NAME`).
AXES_FAILURE_LIMIT = env.integer("TRACKER_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env.duration("TRACKER_LOGIN_LOCKOUT", "15m") / 3600  # hours
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_HANDLER = "tracker.login.MaskedAxesHandler"
AXES_USERNAME_CALLABLE = "tracker.login.axes_username"
AXES_SENSITIVE_PARAMETERS = ["password", "password1", "password2", "csrfmiddlewaretoken"]
# The client's address: REMOTE_ADDR, or behind TRACKER_PROXY_COUNT reverse proxies the address
# they add to X-Forwarded-For (a header anyone can send is never believed on its own).
TRACKER_PROXY_COUNT = env.integer("TRACKER_PROXY_COUNT", 0)
if TRACKER_PROXY_COUNT:
    AXES_IPWARE_PROXY_COUNT = TRACKER_PROXY_COUNT
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]
else:
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]

# Asking D1 from the pages (live refresh, lookup): at most this many a minute per user.
TRACKER_LIVE_PER_MINUTE = env.integer("TRACKER_LIVE_PER_MINUTE", 20, minimum=1)

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ja", _("Japanese"))]
LOCALE_PATHS = [APP_DIR / "locale"]
USE_I18N = True
USE_TZ = True
TIME_ZONE = "UTC"
# Pages show times in the browser's zone (the `tz` cookie, tracker/middleware.py); until the
# browser has said which, in this one.
TRACKER_DISPLAY_TZ = env.timezone_name(
    "TRACKER_DISPLAY_TZ", env.string("TRACKER_DISPLAY_TZ", "UTC")
)
# The card page asks D1 for news this often while an order is not finished (and the tab is
# visible: static/tracker/live.js).
TRACKER_CARD_POLL_SECONDS = env.integer("TRACKER_CARD_POLL_SECONDS", 30, minimum=1)

STATIC_URL = "/static/"
STATIC_ROOT = env.string("DJANGO_STATIC_ROOT") or BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Strict CSP: no inline script or style anywhere; htmx and our JS are served by the app.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "object-src": [CSP.NONE],
}
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

if not DEBUG:
    # Behind a TLS-terminating reverse proxy (docs/deploy.md).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.boolean("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^livez$"]
    SECURE_HSTS_SECONDS = env.integer("DJANGO_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    LANGUAGE_COOKIE_SECURE = True

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # stderr: commands print their results on stdout (card_status --json), logs stay apart.
    # Card numbers are masked in whatever is logged (tracker/pan.py).
    "filters": {"mask_pans": {"()": "tracker.pan.MaskPansFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
            "filters": ["mask_pans"],
        }
    },
    "root": {"handlers": ["console"], "level": env.string("DJANGO_LOG_LEVEL", "INFO")},
    # httpx logs every request at INFO; tracker.d1.client logs each D1 call once, with more.
    # axes.apps announces itself at every start, on the stderr of every command.
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "httpx": {"level": "WARNING"},
        "axes.apps": {"level": "WARNING"},
    },
}

# --- D1 (see docs/d1/REFERENCE.md and docs/settings.md) --------------------------------------

DEMO_ISSUER_ID = "ISS7K2M40Q"

D1_BASE_URL = env.string("D1_BASE_URL", "http://127.0.0.1:8001/banking/v1")
D1_TOKEN_URL = env.string("D1_TOKEN_URL", "http://127.0.0.1:8001/authz/v1/oauth2/token")
D1_ISSUER_IDS = env.csv("D1_ISSUER_IDS", DEMO_ISSUER_ID)
for _issuer in D1_ISSUER_IDS:
    if len(_issuer) != 10 or not _issuer.isalnum():
        raise ImproperlyConfigured(f"D1_ISSUER_IDS: {_issuer!r} is not a 10-character issuerId")
D1_JWT_PRIVATE_KEY_FILE = env.string(
    "D1_JWT_PRIVATE_KEY_FILE", str(BASE_DIR / "var" / "d1-demo-key.pem")
)
D1_JWT_KID = env.string("D1_JWT_KID", "demo")
D1_TLS_CLIENT_CERT = env.existing_file("D1_TLS_CLIENT_CERT")
D1_TLS_CLIENT_KEY = env.existing_file("D1_TLS_CLIENT_KEY")
D1_TLS_CA_BUNDLE = env.existing_file("D1_TLS_CA_BUNDLE")
if bool(D1_TLS_CLIENT_CERT) != bool(D1_TLS_CLIENT_KEY):
    raise ImproperlyConfigured("D1_TLS_CLIENT_CERT and D1_TLS_CLIENT_KEY must be set together")
D1_STATUS_PATH_TEMPLATE = env.string(
    "D1_STATUS_PATH_TEMPLATE", "/issuers/{issuerId}/physicalCards/{cardId}/productionStatus"
)
if "{issuerId}" not in D1_STATUS_PATH_TEMPLATE or "{cardId}" not in D1_STATUS_PATH_TEMPLATE:
    raise ImproperlyConfigured("D1_STATUS_PATH_TEMPLATE must contain {issuerId} and {cardId}")
D1_MAX_RPS = env.decimal("D1_MAX_RPS", 5.0, minimum=0.1)

# The D1 client (tracker/d1/client.py). Times in seconds. Two profiles: an agent waits on the
# interactive one; background work (reconciliation) can afford longer waits and more retries.
D1_INTERACTIVE_CONNECT_TIMEOUT = env.decimal("D1_INTERACTIVE_CONNECT_TIMEOUT", 1.0, minimum=0.01)
D1_INTERACTIVE_READ_TIMEOUT = env.decimal("D1_INTERACTIVE_READ_TIMEOUT", 2.5, minimum=0.01)
D1_INTERACTIVE_RETRIES = env.integer("D1_INTERACTIVE_RETRIES", 2)
D1_INTERACTIVE_BUDGET = env.decimal("D1_INTERACTIVE_BUDGET", 4.0, minimum=0.1)
D1_BACKGROUND_CONNECT_TIMEOUT = env.decimal("D1_BACKGROUND_CONNECT_TIMEOUT", 3.0, minimum=0.01)
D1_BACKGROUND_READ_TIMEOUT = env.decimal("D1_BACKGROUND_READ_TIMEOUT", 10.0, minimum=0.01)
D1_BACKGROUND_RETRIES = env.integer("D1_BACKGROUND_RETRIES", 4)
D1_BACKGROUND_BUDGET = env.decimal("D1_BACKGROUND_BUDGET", 30.0, minimum=0.1)
D1_BACKOFF_BASE = env.decimal("D1_BACKOFF_BASE", 0.2)
D1_BACKOFF_CAP = env.decimal("D1_BACKOFF_CAP", 5.0)
D1_RETRY_AFTER_CAP = env.decimal("D1_RETRY_AFTER_CAP", 10.0)
D1_RETRY_STATUSES = frozenset(env.integers("D1_RETRY_STATUSES", "429,502,503,504", 400, 599))
D1_BREAKER_THRESHOLD = env.integer("D1_BREAKER_THRESHOLD", 5, minimum=1)
D1_BREAKER_COOLDOWN = env.decimal("D1_BREAKER_COOLDOWN", 30.0)
D1_TOKEN_REFRESH_MARGIN = env.decimal("D1_TOKEN_REFRESH_MARGIN", 60.0)
D1_JWT_LIFETIME = env.integer("D1_JWT_LIFETIME", 300, minimum=10)
if D1_JWT_LIFETIME > 900:
    raise ImproperlyConfigured("D1_JWT_LIFETIME must be at most 900: D1 refuses longer assertions")
D1_JWT_AUDIENCE = env.string("D1_JWT_AUDIENCE")

# Notifications from D1 (REFERENCE §4).
D1_NOTIFY_AUTH = env.choice("D1_NOTIFY_AUTH", "bearer", ("bearer", "hmac", "proxy-mtls", "none"))
if D1_NOTIFY_AUTH == "none" and not DEBUG:
    raise ImproperlyConfigured("D1_NOTIFY_AUTH=none is for the demo only (DJANGO_DEBUG=1)")
D1_NOTIFY_CLIENT_ID = env.string("D1_NOTIFY_CLIENT_ID", "d1-demo")
if DEBUG:
    D1_NOTIFY_CLIENT_SECRET = env.string("D1_NOTIFY_CLIENT_SECRET", "d1-demo-secret")
elif D1_NOTIFY_AUTH == "bearer":
    D1_NOTIFY_CLIENT_SECRET = env.required(
        "D1_NOTIFY_CLIENT_SECRET", "D1 authenticates with it before sending notifications"
    )
else:
    D1_NOTIFY_CLIENT_SECRET = env.string("D1_NOTIFY_CLIENT_SECRET")
D1_NOTIFY_TOKEN_TTL = env.integer("D1_NOTIFY_TOKEN_TTL", 900, minimum=60)
if D1_NOTIFY_TOKEN_TTL > 900:
    raise ImproperlyConfigured("D1_NOTIFY_TOKEN_TTL must be at most 900 seconds (15 minutes)")
D1_NOTIFY_MAX_BODY_BYTES = env.integer("D1_NOTIFY_MAX_BODY_BYTES", 5 * 1024 * 1024, minimum=1024)
D1_NOTIFY_HMAC_HEADER = env.header_name("D1_NOTIFY_HMAC_HEADER", "X-D1-Signature")
# Optional: when D1 sends this header (Unix seconds), the signature covers "<timestamp>.<body>"
# and one older or newer than the tolerance (seconds) is refused.
D1_NOTIFY_HMAC_TIMESTAMP_HEADER = env.header_name(
    "D1_NOTIFY_HMAC_TIMESTAMP_HEADER", "X-D1-Signature-Timestamp"
)
D1_NOTIFY_HMAC_TOLERANCE = env.integer("D1_NOTIFY_HMAC_TOLERANCE", 300, minimum=1)
# The current secret, and during a rotation the next one: both are accepted.
D1_NOTIFY_HMAC_SECRETS = env.csv("D1_NOTIFY_HMAC_SECRETS")
if D1_NOTIFY_AUTH == "hmac" and not D1_NOTIFY_HMAC_SECRETS:
    raise ImproperlyConfigured("D1_NOTIFY_HMAC_SECRETS must be set when D1_NOTIFY_AUTH=hmac")
if len(D1_NOTIFY_HMAC_SECRETS) > 2:
    raise ImproperlyConfigured("D1_NOTIFY_HMAC_SECRETS takes at most two secrets: current,next")
# proxy-mtls: the reverse proxy verified D1's client certificate and says so in a header, which
# counts only when the request comes straight from one of these addresses.
TRUSTED_PROXY_IPS = env.ip_networks("TRUSTED_PROXY_IPS")
if D1_NOTIFY_AUTH == "proxy-mtls" and not TRUSTED_PROXY_IPS:
    raise ImproperlyConfigured("TRUSTED_PROXY_IPS must be set when D1_NOTIFY_AUTH=proxy-mtls")
D1_NOTIFY_MTLS_VERIFY_HEADER = env.header_name(
    "D1_NOTIFY_MTLS_VERIFY_HEADER", "X-SSL-Client-Verify"
)
D1_NOTIFY_MTLS_SUBJECT_HEADER = env.header_name(
    "D1_NOTIFY_MTLS_SUBJECT_HEADER", "X-SSL-Client-S-DN"
)
# Subject DNs contain commas, so the list is separated by "|".
D1_NOTIFY_MTLS_SUBJECTS = [
    subject.strip()
    for subject in env.string("D1_NOTIFY_MTLS_SUBJECTS").split("|")
    if subject.strip()
]

# How the ingest reads D1's open-ended vocabulary (REFERENCE §3, §4, §7).
D1_UNKNOWN_STATUS_POLICY = env.choice(
    "D1_UNKNOWN_STATUS_POLICY", "store_and_flag", ("store_and_flag", "store")
)
D1_PROD_EXCEPTION_TERMINAL = env.boolean("D1_PROD_EXCEPTION_TERMINAL", True)
D1_DEDUP_KEY_MODE = env.choice("D1_DEDUP_KEY_MODE", "canonical", ("canonical", "state_tuple"))
D1_LATE_GRACE_HOURS = env.decimal("D1_LATE_GRACE_HOURS", 0.0)
D1_DEFAULT_SITE_TZ = env.timezone_name(
    "D1_DEFAULT_SITE_TZ", env.string("D1_DEFAULT_SITE_TZ", "UTC")
)
D1_PRODUCTION_SITE_TZ = {
    site: env.timezone_name("D1_PRODUCTION_SITE_TZ", zone)
    for site, zone in env.mapping("D1_PRODUCTION_SITE_TZ").items()
}

_SHIPMENT_BUCKETS = ("in_transit", "delivered", "problem", "returned", "unknown")
D1_SHIPMENT_STATUS_MAP = env.mapping("D1_SHIPMENT_STATUS_MAP")
for _status, _bucket in D1_SHIPMENT_STATUS_MAP.items():
    if _bucket not in _SHIPMENT_BUCKETS:
        raise ImproperlyConfigured(
            f"D1_SHIPMENT_STATUS_MAP: {_status}={_bucket}, bucket must be one of "
            + ", ".join(_SHIPMENT_BUCKETS)
        )
D1_WORKING_DAYS = env.weekdays("D1_WORKING_DAYS", "mon,tue,wed,thu,fri")

# The supervisors' queue.
TRACKER_RECHECK_MAX = env.integer("TRACKER_RECHECK_MAX", 1000, minimum=1)

# The admin site: its production-site filter offers these sites (listing the sites from the
# orders themselves would scan them all).
TRACKER_PRODUCTION_SITES = env.csv("TRACKER_PRODUCTION_SITES") or sorted(D1_PRODUCTION_SITE_TZ)

# The missed-notification sweep (`manage.py reconcile`, tracker/reconcile/).
# Cards per task, and threads per task in a worker: each thread makes one D1 call at a time.
TRACKER_RECONCILE_BATCH = env.integer("TRACKER_RECONCILE_BATCH", 25, minimum=1)
TRACKER_RECONCILE_THREADS = env.integer("TRACKER_RECONCILE_THREADS", 8, minimum=1)
# How much work the sweep keeps queued ahead of the workers, in seconds of D1_MAX_RPS.
TRACKER_RECONCILE_WAVE = env.duration("TRACKER_RECONCILE_WAVE", "10s")
# A card D1 confirmed this recently is not asked about again.
TRACKER_RECONCILE_RECHECK_AFTER = env.duration("TRACKER_RECONCILE_RECHECK_AFTER", "1h")
# A sweep whose workers finish no card for this long stops (no worker running?).
TRACKER_RECONCILE_STALL_TIMEOUT = env.duration("TRACKER_RECONCILE_STALL_TIMEOUT", "2m")
# A sweep silent for this long has died: its cards go back to the pool for the next one.
TRACKER_RECONCILE_CLAIM_TIMEOUT = env.duration("TRACKER_RECONCILE_CLAIM_TIMEOUT", "5m")

# Notifications are stored on the request path and applied by `manage.py apply_notifications`
# (docs/notifications.md). Inline: the web process applies them itself right after answering,
# which suits the single-process SQLite demo.
TRACKER_APPLY_INLINE = env.boolean(
    "TRACKER_APPLY_INLINE", DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
)
# Bodies one applier transaction takes at most, and how long an idle applier waits for a
# PostgreSQL NOTIFY before it looks at the inbox anyway.
TRACKER_APPLY_BATCH = env.integer("TRACKER_APPLY_BATCH", 100, minimum=1)
TRACKER_APPLY_POLL = env.duration("TRACKER_APPLY_POLL", "1s")
# Apply lag (age of the oldest body not applied yet) past which /healthz says not ready.
TRACKER_APPLY_LAG_LIMIT = env.duration("TRACKER_APPLY_LAG_LIMIT", "60s")

# --- Operations: alerts, health, metrics, logs, retention (docs/operations.md) ---------------

# Alert thresholds until an administrator edits them (AlertRule rows), as kind=number pairs.
TRACKER_ALERT_THRESHOLDS = env.counts(
    "TRACKER_ALERT_THRESHOLDS",
    (
        "sweep_drift", "queue_size", "late_count", "issuer_silent",
        "breaker_open", "apply_lag", "task_backlog", "auth_failures",
    ),
)  # fmt: skip
TRACKER_ALERT_EMAILS = env.csv("TRACKER_ALERT_EMAILS")
TRACKER_ALERT_WEBHOOK_URL = env.string("TRACKER_ALERT_WEBHOOK_URL")
TRACKER_ALERT_FROM_EMAIL = env.string("TRACKER_ALERT_FROM_EMAIL", "tracker@localhost")
# Django's mail: SMTP by default; the demo writes messages to files under var/mail.
_EMAIL_BACKEND = env.string("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
if _EMAIL_BACKEND.endswith("smtp.EmailBackend"):
    _EMAIL_OPTIONS = {
        "host": env.string("DJANGO_EMAIL_HOST", "localhost"),
        "port": env.integer("DJANGO_EMAIL_PORT", 25, minimum=1),
        "username": env.string("DJANGO_EMAIL_HOST_USER"),
        "password": env.string("DJANGO_EMAIL_HOST_PASSWORD"),
        "use_tls": env.boolean("DJANGO_EMAIL_USE_TLS", False),
        "timeout": 10,
    }
elif _EMAIL_BACKEND.endswith("filebased.EmailBackend"):
    _EMAIL_OPTIONS = {
        "file_path": env.string("DJANGO_EMAIL_FILE_PATH", str(BASE_DIR / "var" / "mail"))
    }
else:
    _EMAIL_OPTIONS = {}
MAILERS = {"default": {"BACKEND": _EMAIL_BACKEND, "OPTIONS": _EMAIL_OPTIONS}}

# /healthz answers 503 past these limits (0 turns a check off) and past TRACKER_APPLY_LAG_LIMIT.
TRACKER_HEALTH_MAX_TASK_BACKLOG = env.integer("TRACKER_HEALTH_MAX_TASK_BACKLOG", 5000)
TRACKER_HEALTH_SWEEP_WITHIN = env.optional_duration("TRACKER_HEALTH_SWEEP_WITHIN", "off")

# /metrics: a bearer token, or (unset) only from these networks.
TRACKER_METRICS_TOKEN = env.string("TRACKER_METRICS_TOKEN")
TRACKER_METRICS_NETWORKS = env.ip_networks("TRACKER_METRICS_NETWORKS", "127.0.0.1/32,::1/128")

# One JSON object per log line instead of plain text.
TRACKER_LOG_JSON = env.boolean("TRACKER_LOG_JSON", False)
if TRACKER_LOG_JSON:
    LOGGING["formatters"]["plain"] = {"()": "tracker.ops.logs.JsonFormatter"}
LOGGING["handlers"]["console"]["filters"] = ["context"]
LOGGING["filters"] = {"context": {"()": "tracker.ops.logs.ContextFilter"}}

# Retention (`manage.py purge`): ages per kind of data; 0 keeps that kind forever.
TRACKER_RETAIN_INBOX_BODIES = env.optional_duration("TRACKER_RETAIN_INBOX_BODIES", "30d")
TRACKER_RETAIN_EVENT_RAW = env.optional_duration("TRACKER_RETAIN_EVENT_RAW", "180d")
TRACKER_RETAIN_LOOKUP_AUDIT = env.optional_duration("TRACKER_RETAIN_LOOKUP_AUDIT", "90d")
TRACKER_RETAIN_TASK_RESULTS = env.optional_duration("TRACKER_RETAIN_TASK_RESULTS", "7d")
TRACKER_RETAIN_SWEEPS = env.optional_duration("TRACKER_RETAIN_SWEEPS", "90d")
TRACKER_RETAIN_ALERTS = env.optional_duration("TRACKER_RETAIN_ALERTS", "365d")
TRACKER_RETAIN_TERMINAL_ORDERS = env.optional_duration("TRACKER_RETAIN_TERMINAL_ORDERS", "off")
TRACKER_PURGE_BATCH = env.integer("TRACKER_PURGE_BATCH", 5000, minimum=1)
