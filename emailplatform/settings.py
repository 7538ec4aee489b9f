"""Settings, all read from the environment (see `.env.example`)."""

import sys
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from .dbnames import application_name

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG-on"  # noqa: S105

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "axes",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "messages.apps.MailStoreConfig",
    "smtp_sync.apps.SmtpSyncConfig",
    "gmail_sync.apps.GmailSyncConfig",
    "webhooks.apps.WebhooksConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's CSS, Swagger UI's sidecar files) straight from STATIC_ROOT.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a locked-out admin login into a 429 (see AXES_* below).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "emailplatform.urls"
WSGI_APPLICATION = "emailplatform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {"default": env.db("DATABASE_URL", default="postgres://localhost/emailplatform")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Connections per kind of process in pg_stat_activity (README, "Database connections").
DATABASES["default"].setdefault("OPTIONS", {})["application_name"] = application_name(sys.argv)
# Behind a transaction-pooling pgbouncer: no cursor may outlive its transaction (Django declares
# the server-side cursors of .iterator() WITH HOLD outside one).
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env.bool("DB_TRANSACTION_POOLING", False)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Axes first: it refuses a locked-out (username, IP) before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / ".local" / "static")
# WhiteNoise serves STATIC_ROOT (filled by `manage.py collectstatic`). With STATIC_MANIFEST
# file names carry a content hash and are cached for a year; pages then need collectstatic to
# have run (the image runs it at build time), so it is off unless set (production: on).
STATIC_MANIFEST = env.bool("STATIC_MANIFEST", default=False)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if STATIC_MANIFEST
            else "whitenoise.storage.CompressedStaticFilesStorage"
        )
    },
}
MEDIA_URL = "media/"
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / ".local" / "media")

# Object storage (issue 10): raw segments, attachments, staged big messages and outbound
# uploads stay on the local disk (MEDIA_ROOT) unless MEDIA_STORAGE=s3, which puts them in an
# S3-compatible bucket that workers on several hosts share (emailplatform.object_storage).
# Credentials: S3_ACCESS_KEY_ID/S3_SECRET_ACCESS_KEY, else boto3's own chain (AWS_* variables,
# an instance profile). Objects above S3_MULTIPART_THRESHOLD_BYTES go up in parts of
# S3_MULTIPART_CHUNK_BYTES (S3 wants at least 5 MiB a part).
# A variable set but empty (docker-compose passes every one) counts as unset.
MEDIA_STORAGE = env.str("MEDIA_STORAGE", default="local")
if MEDIA_STORAGE == "s3":
    STORAGES["default"] = {
        "BACKEND": "emailplatform.object_storage.MailObjectStorage",
        "OPTIONS": {
            "bucket_name": env.str("S3_BUCKET"),
            "endpoint_url": env.str("S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("S3_REGION_NAME", default="") or None,
            "access_key": env.str("S3_ACCESS_KEY_ID", default="") or None,
            "secret_key": env.str("S3_SECRET_ACCESS_KEY", default="") or None,
            "location": env.str("S3_LOCATION", default=""),
            "addressing_style": env.str("S3_ADDRESSING_STYLE", default="") or None,
            "file_overwrite": True,  # names are unique or content-addressed
            "querystring_auth": True,
            "multipart_threshold": env.int("S3_MULTIPART_THRESHOLD_BYTES", default=64 * 2**20),
            "multipart_chunksize": env.int("S3_MULTIPART_CHUNK_BYTES", default=16 * 2**20),
            "max_concurrency": env.int("S3_MAX_CONCURRENCY", default=4),
            "max_memory_size": 2 * 2**20,  # a file opened whole spills to disk past this
        },
    }
elif MEDIA_STORAGE != "local":
    raise ImproperlyConfigured(f"MEDIA_STORAGE must be local or s3, not {MEDIA_STORAGE!r}")

# Credentials at rest: Fernet keys, comma separated, newest first. Encryption uses the first;
# decryption tries each, so a key can be rotated in without re-encrypting at once
# (`manage.py rotate_credentials` re-encrypts everything under the first key).
CREDENTIALS_KEYS = env.list("CREDENTIALS_KEYS", default=[])

REDIS_URL = env("REDIS_URL", default="redis://localhost:6379/0")
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)

# Login lockouts and API throttles count in Redis (shared by every web process), under their
# own key prefix; THROTTLE_CACHE_URL may point them at another Redis or database.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env("THROTTLE_CACHE_URL", default=REDIS_URL),
        "KEY_PREFIX": env("THROTTLE_KEY_PREFIX", default="emailplatform-throttle"),
        "TIMEOUT": 3600,
    },
}

# Redis re-delivers a message whose worker died without acknowledging it after this long. It
# must exceed the longest task (the hard time limit in celery.py).
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=2 * 60 * 60)
# Workers look for such messages every INTERVAL seconds, scanning on one look in THROTTLE.
CELERY_UNACKED_RESTORE_INTERVAL = env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10)
CELERY_UNACKED_RESTORE_THROTTLE = env.int("CELERY_UNACKED_RESTORE_THROTTLE", default=10)

# IMAP sync: messages per UID FETCH, and the per-account sync lock's expiry (a heartbeat thread
# extends it every TTL/6 while the sync runs, so a dead worker's lock frees itself quickly).
IMAP_FETCH_BATCH = env.int("IMAP_FETCH_BATCH", default=100)
SYNC_LOCK_TTL_SECONDS = env.int("SYNC_LOCK_TTL_SECONDS", default=30)
# The sync watchdog (smtp_sync.watchdog, a thread in every worker, one tick per interval across
# all of them): reaps runs whose lock is gone, re-enqueues their work and any request nobody
# runs, and re-tests parked accounts. 0 turns it off.
SYNC_WATCHDOG_SECONDS = env.int("SYNC_WATCHDOG_SECONDS", default=15)
# An account whose server refused its password (auth_error) has its login re-tested after this
# long, doubling after each refusal up to the maximum: a password fixed on the server within a
# minute or two brings the account back within two minutes; one that stays wrong costs about
# ten logins the first day (1, 2, 4 ... 512 minutes), then one a day.
AUTH_RETEST_SECONDS = env.int("AUTH_RETEST_SECONDS", default=60)
AUTH_RETEST_MAX_SECONDS = env.int("AUTH_RETEST_MAX_SECONDS", default=24 * 60 * 60)

# Outbound delivery (messages.outbox_delivery). A transient failure (connection refused, a
# timeout, 4xx) is retried after OUTBOUND_RETRY_BASE_SECONDS, doubling up to
# OUTBOUND_RETRY_MAX_SECONDS (with jitter), OUTBOUND_MAX_ATTEMPTS attempts in all. Sending limits
# per account (its sync_settings sendPerMinute / sendPerDay override them; 0: no limit): excess
# waits for a free slot. An "unknown" message (the server may have it) whose Sent folder cannot
# tell is looked for every OUTBOUND_UNKNOWN_CHECK_SECONDS, and failed (never resent) after
# OUTBOUND_UNKNOWN_GIVE_UP_SECONDS.
OUTBOUND_MAX_ATTEMPTS = env.int("OUTBOUND_MAX_ATTEMPTS", default=8)
OUTBOUND_RETRY_BASE_SECONDS = env.float("OUTBOUND_RETRY_BASE_SECONDS", default=60.0)
OUTBOUND_RETRY_MAX_SECONDS = env.float("OUTBOUND_RETRY_MAX_SECONDS", default=2 * 60 * 60)
OUTBOUND_SEND_PER_MINUTE = env.int("OUTBOUND_SEND_PER_MINUTE", default=30)
OUTBOUND_SEND_PER_DAY = env.int("OUTBOUND_SEND_PER_DAY", default=2000)
OUTBOUND_UNKNOWN_CHECK_SECONDS = env.int("OUTBOUND_UNKNOWN_CHECK_SECONDS", default=5 * 60)
OUTBOUND_UNKNOWN_GIVE_UP_SECONDS = env.int("OUTBOUND_UNKNOWN_GIVE_UP_SECONDS", default=24 * 60 * 60)
# Queued messages of an account that cannot send (login refused, paused) wait for it this long,
# then fail with the reason.
OUTBOUND_ACCOUNT_WAIT_GIVE_UP_SECONDS = env.int(
    "OUTBOUND_ACCOUNT_WAIT_GIVE_UP_SECONDS", default=3 * 24 * 60 * 60
)

# The message pipeline (messages.batches, messages.batch_store). Producers (IMAP sync, import_mail)
# publish new mail on `email_new_message` in batches of at most INGEST_BATCH_BYTES, and wait
# while an account has INGEST_MAX_BATCHES_IN_FLIGHT of them not yet stored (backpressure: Redis
# holds at most about 1.4 x bytes x in-flight per syncing account for mail sent inline; an IMAP
# batch on the queue is staged as one blob in the media storage instead, and Redis holds only
# its references: topics.new_message_items_staged). A consumer holds a batch
# under a lease that a heartbeat renews every third of INGEST_LEASE_SECONDS; a batch whose
# consumer died (lease gone) is fetched and published again by its producer, and so is one
# nobody took within INGEST_QUEUE_TIMEOUT_SECONDS (a broker that lost its queue).
# INGEST_DELIVERY "inline" stores each batch in the producer's own process (scripts, tests).
INGEST_DELIVERY = env.str("INGEST_DELIVERY", default="queue")
# With "queue", a batch of at most INGEST_INLINE_MAX_MESSAGES messages and INGEST_INLINE_MAX_BYTES
# of raw mail is stored by its producer all the same (messages.batches.stores_inline): it would
# only wait for it, and new mail seen through IDLE is stored without the queue's round trip.
# INGEST_INLINE_MAX_MESSAGES=0 sends every batch through the queue.
INGEST_INLINE_MAX_MESSAGES = env.int("INGEST_INLINE_MAX_MESSAGES", default=10)
INGEST_INLINE_MAX_BYTES = env.int("INGEST_INLINE_MAX_BYTES", default=1024 * 1024)
INGEST_BATCH_BYTES = env.int("INGEST_BATCH_BYTES", default=4 * 1024 * 1024)
INGEST_MAX_BATCHES_IN_FLIGHT = env.int("INGEST_MAX_BATCHES_IN_FLIGHT", default=4)
INGEST_LEASE_SECONDS = env.int("INGEST_LEASE_SECONDS", default=30)
INGEST_QUEUE_TIMEOUT_SECONDS = env.int("INGEST_QUEUE_TIMEOUT_SECONDS", default=600)
# Batch rows a dead producer left are pruned by the storage sweeper after this long.
INGEST_BATCH_RETENTION_HOURS = env.int("INGEST_BATCH_RETENTION_HOURS", default=24)

# Logged-in IMAP sessions kept per process for reuse (smtp_sync.pool): a burst of syncs of one
# account logs in once. At most MAX_CONNECTIONS sessions per process (0: no pooling) and
# MAX_PER_ACCOUNT per server account, idle or in use; an idle session is logged out after
# IDLE_SECONDS, any session after MAX_AGE_SECONDS (a password changed on the server is proved
# again); a sync that finds no free slot waits CHECKOUT_TIMEOUT_SECONDS, then is retried later.
IMAP_POOL_MAX_CONNECTIONS = env.int("IMAP_POOL_MAX_CONNECTIONS", default=20)
IMAP_POOL_MAX_PER_ACCOUNT = env.int("IMAP_POOL_MAX_PER_ACCOUNT", default=2)
IMAP_POOL_IDLE_SECONDS = env.float("IMAP_POOL_IDLE_SECONDS", default=300.0)
IMAP_POOL_MAX_AGE_SECONDS = env.float("IMAP_POOL_MAX_AGE_SECONDS", default=1800.0)
IMAP_POOL_CHECKOUT_TIMEOUT_SECONDS = env.float("IMAP_POOL_CHECKOUT_TIMEOUT_SECONDS", default=30.0)

# The Gmail API (gmail_sync). The OAuth client of the platform's Google Cloud project; the
# endpoints are Google's and change only for the test suite's local Gmail API (and a proxy).
# Batch requests need their own URI: google-api-python-client builds it from the discovery
# document, never from the API endpoint. GMAIL_CA_CERTS: a CA bundle to trust instead of the
# system's (the local server's certificate).
GMAIL_CLIENT_ID = env("GMAIL_CLIENT_ID", default="")
GMAIL_CLIENT_SECRET = env("GMAIL_CLIENT_SECRET", default="")
GMAIL_API_ENDPOINT = env("GMAIL_API_ENDPOINT", default="https://gmail.googleapis.com/")
GMAIL_BATCH_URI = env("GMAIL_BATCH_URI", default="https://gmail.googleapis.com/batch/gmail/v1")
GMAIL_TOKEN_URI = env("GMAIL_TOKEN_URI", default="https://oauth2.googleapis.com/token")
GMAIL_AUTH_URI = env("GMAIL_AUTH_URI", default="https://accounts.google.com/o/oauth2/auth")
GMAIL_CA_CERTS = env("GMAIL_CA_CERTS", default=None)
GMAIL_TIMEOUT_SECONDS = env.float("GMAIL_TIMEOUT_SECONDS", default=30.0)
# Where Google sends the user back after consent (this platform's /gmail/oauth/callback as the
# browser reaches it); empty: built from the request.
GMAIL_OAUTH_REDIRECT_URI = env("GMAIL_OAUTH_REDIRECT_URI", default="")
# How long a started connection (its OAuth `state`) may wait for the user to come back.
GMAIL_OAUTH_STATE_SECONDS = env.int("GMAIL_OAUTH_STATE_SECONDS", default=600)
# Google's published per-user limit is 250 quota units per second; every worker of the
# platform draws from one bucket per mailbox in Redis (gmail_sync.quota).
GMAIL_QUOTA_UNITS_PER_SECOND = env.int("GMAIL_QUOTA_UNITS_PER_SECOND", default=250)
# Retries of one call (or of a batch's failed parts) on 429, rate-limit 403 and 5xx, with
# exponential backoff and jitter from BASE seconds, honouring Retry-After.
GMAIL_MAX_RETRIES = env.int("GMAIL_MAX_RETRIES", default=6)
GMAIL_RETRY_BASE_SECONDS = env.float("GMAIL_RETRY_BASE_SECONDS", default=1.0)
# Calls per batch request: Gmail allows 100 and recommends 50.
GMAIL_BATCH_SIZE = env.int("GMAIL_BATCH_SIZE", default=50)
# Push notifications: the Pub/Sub topic given to users.watch (empty: no mailbox is watched),
# and what the push endpoint (/gmail/push) accepts: the OIDC token's audience and its service
# account, checked against Google's certificates (cached for their max-age). Without both,
# the endpoint refuses every push.
GMAIL_PUBSUB_TOPIC = env("GMAIL_PUBSUB_TOPIC", default="")
GMAIL_PUSH_AUDIENCE = env("GMAIL_PUSH_AUDIENCE", default="")
GMAIL_PUSH_SERVICE_ACCOUNT = env("GMAIL_PUSH_SERVICE_ACCOUNT", default="")
GMAIL_OIDC_CERTS_URL = env(
    "GMAIL_OIDC_CERTS_URL", default="https://www.googleapis.com/oauth2/v1/certs"
)

# How often beat publishes a full sync of every active account (django-celery-beat seeds it;
# operators edit it in the admin afterwards).
FULL_SYNC_INTERVAL_MINUTES = env.int("FULL_SYNC_INTERVAL_MINUTES", default=360)

# Messages larger than this are not inlined on a queue: they are staged in the media storage and
# the payload carries a reference (see emailplatform.topics).
INLINE_RAW_LIMIT_BYTES = env.int("INLINE_RAW_LIMIT_BYTES", default=2 * 1024 * 1024)

# Messages larger than this are never held in memory whole: IMAP fetches them in pieces into a
# temporary file, their big parts are decoded part by part (messages.mime_stream), and their
# raw bytes are kept compressed in a file of the media storage rather than in the database.
LARGE_MESSAGE_BYTES = env.int("LARGE_MESSAGE_BYTES", default=8 * 1024 * 1024)
# A batch whose compressed raw messages add up to at most this keeps them in their database rows
# rather than a segment file (messages.models.RawMessage): the one new message an IDLE notice
# brings is then stored with one fsync (the commit's), not two.
RAW_IN_ROW_MAX_BYTES = env.int("RAW_IN_ROW_MAX_BYTES", default=64 * 1024)

# Brute force: after AXES_FAILURE_LIMIT wrong passwords for one username from one IP address,
# that pair is refused (429, Retry-After) on /api/auth/token/ and /admin/login/ until
# AXES_COOLOFF_MINUTES have passed without a new attempt. Never by username alone: an attacker
# could otherwise lock a victim out from anywhere, for ever.
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_CACHE = "default"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "messages.api.throttling.lockout_response"
AXES_SENSITIVE_PARAMETERS = ["password"]
# Behind a proxy, the client address is the proxy's Nth X-Forwarded-For entry from the right.
AXES_IPWARE_PROXY_COUNT = env.int("NUM_PROXIES", default=0) or None
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"] if AXES_IPWARE_PROXY_COUNT else ["REMOTE_ADDR"]
)

# API tokens (django-rest-knox): only a SHA-512 digest is stored; each login issues a new token
# that expires after API_TOKEN_TTL_HOURS (logging in again gives a fresh one).
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=env.int("API_TOKEN_TTL_HOURS", default=24 * 30)),
    "TOKEN_LIMIT_PER_USER": None,
    "AUTO_REFRESH": False,
    "AUTH_HEADER_PREFIX": "Token",
}
API_TOKENS_PER_USER = env.int("API_TOKENS_PER_USER", default=20)

# Request rates per user (per client address for anonymous requests), "N/second|minute|hour|
# day". Stricter where a request costs a login to the provider or queues work.
THROTTLE_RATES = {
    "anon": env("THROTTLE_ANON", default="60/minute"),
    "user": env("THROTTLE_USER", default="1200/minute"),
    "account_create": env("THROTTLE_ACCOUNT_CREATE", default="10/hour"),
    "test_connection": env("THROTTLE_TEST_CONNECTION", default="6/minute"),
    "sync": env("THROTTLE_SYNC", default="12/minute"),
    # Composing and sending mail (outbox creates, sends and uploads).
    "send": env("THROTTLE_SEND", default="120/minute"),
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "messages.api.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "messages.api.throttling.AnonThrottle",
        "messages.api.throttling.UserThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": THROTTLE_RATES,
    # 0: X-Forwarded-For is ignored (None would trust it, and anyone could spoof it).
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "messages.api.schema.ApiAutoSchema",
    "DEFAULT_PAGINATION_CLASS": "messages.api.pagination.KeysetCursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["messages.api.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "messages.api.errors.exception_handler",
    "DEFAULT_METADATA_CLASS": "messages.api.metadata.ApiMetadata",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Email platform API",
    "DESCRIPTION": (
        "Mailboxes synced from IMAP and Gmail, for mail clients. Authenticate with "
        "`Authorization: Token <token>` (POST /api/auth/token/) or a session. Every list is "
        "cursor-paginated (follow `next`); errors have one shape: "
        '`{"error": {"code", "message", "fields"}}`.'
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files are served by this project (no CDN: it works offline and under a CSP).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Separate request and response components: write-only secrets appear in requests only.
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/",
    "PATH_CONVERTER_OVERRIDES": {
        "id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    },
    "ENUM_NAME_OVERRIDES": {
        "AccountStatusEnum": "messages.models.Account.Status",
        "FolderRoleEnum": "messages.models.Folder.Role",
        "SecurityEnum": "smtp_sync.models.Security",
    },
}

# Process resilience (issue 14): the storage sweeper (messages.storage_sweep, run by beat) removes
# media files that no row names once they are older than the grace period; temporary work goes
# to one directory per process under FILE_UPLOAD_TEMP_DIR (default: the system temp dir), whose
# leftovers a later process removes (emailplatform.tempdirs).
STORAGE_SWEEP_GRACE_SECONDS = env.int("STORAGE_SWEEP_GRACE_SECONDS", default=3600)
STORAGE_SWEEP_INTERVAL_MINUTES = env.int("STORAGE_SWEEP_INTERVAL_MINUTES", default=60)
FILE_UPLOAD_TEMP_DIR = env("FILE_UPLOAD_TEMP_DIR", default=None)
# The outbox (messages.outbox): the largest message an account sends, measured on the built
# MIME (an account's sync_settings "sendMaxBytes" overrides it), and the dispatcher's clock
# (messages.outbox_dispatch). A send task is enqueued with its ETA when due within the horizon
# (which must stay below CELERY_VISIBILITY_TIMEOUT, or Redis re-delivers the waiting task); the
# sweeper, every OUTBOX_SWEEP_INTERVAL_SECONDS, enqueues later ones as they come within it,
# re-enqueues due ones whose task was lost (waiting past the grace), and marks `unknown` an
# attempt still `sending` after the timeout (which must exceed the task time limit, 20 min).
OUTBOUND_MAX_MESSAGE_BYTES = env.int("OUTBOUND_MAX_MESSAGE_BYTES", default=25 * 1024 * 1024)
OUTBOX_SWEEP_INTERVAL_SECONDS = env.int("OUTBOX_SWEEP_INTERVAL_SECONDS", default=60)
OUTBOX_ETA_HORIZON_SECONDS = env.int("OUTBOX_ETA_HORIZON_SECONDS", default=3600)
# One send task carries up to this many messages of one account due together (a burst: one
# SMTP connection, bulk state changes; messages.outbox_burst).
OUTBOX_BURST_MAX = env.int("OUTBOX_BURST_MAX", default=100)
OUTBOX_LOST_TASK_GRACE_SECONDS = env.int("OUTBOX_LOST_TASK_GRACE_SECONDS", default=300)
OUTBOX_SENDING_TIMEOUT_SECONDS = env.int("OUTBOX_SENDING_TIMEOUT_SECONDS", default=25 * 60)
# The most messages one POST /api/outbound/batch/ composes (each counts against the `send` rate).
OUTBOX_BATCH_MAX = env.int("OUTBOX_BATCH_MAX", default=100)
# Touched by beat after every tick (emailplatform.beat.HeartbeatScheduler), for health checks.
BEAT_HEARTBEAT_FILE = env("BEAT_HEARTBEAT_FILE", default=None)

# Error reports (the DEBUG page, mail to ADMINS) hide passwords in URLs (DATABASE_URL,
# REDIS_URL...), password fields of any dict in a frame, and the usual secret settings.
DEFAULT_EXCEPTION_REPORTER_FILTER = "messages.api.errors.SafeExceptionReporterFilter"

# Behind a TLS-terminating proxy: SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https makes
# request.is_secure() (and so every link the API builds) follow the proxy's scheme.
_proxy_ssl_header = env.list("SECURE_PROXY_SSL_HEADER", default=[])
if _proxy_ssl_header:
    if len(_proxy_ssl_header) != 2:
        raise ImproperlyConfigured("SECURE_PROXY_SSL_HEADER is HEADER,value")
    SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header)
USE_X_FORWARDED_HOST = env.bool("USE_X_FORWARDED_HOST", default=False)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# Health checks and Prometheus scrapes come from inside the deployment, over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)

# LOG_FORMAT=json: one JSON object a line (python-json-logger), for a log pipeline; "plain" (the
# default) for people. Either way a line logged during a sync carries account_id and
# sync_run_id (emailplatform.observability.logcontext; JSON fields, or attributes for a format).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT is plain or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"sync_context": {"()": "emailplatform.observability.logcontext.SyncContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",  # ISO 8601, UTC, with microseconds
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["sync_context"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # flufl.bounce logs each of its 17 detectors at INFO for every bounce it scans.
    "loggers": {"flufl.bounce": {"level": "WARNING"}},
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_CONTENT_TYPE_NOSNIFF = True

# Outbound connections to hosts users type (IMAP/SMTP servers, later webhooks) ---------------
# All go through emailplatform.netguard: the host is resolved once and the connection made to
# the checked address. Loopback, private, link-local, CGNAT, multicast and reserved addresses
# are refused unless listed here (comma separated: CIDR or address, optionally with a port, or a
# host name with an optional port: `10.0.0.0/8`, `127.0.0.1:1143`, `[::1]:1143`,
# `imap.internal:993`). Unencrypted IMAP/SMTP (security "none") is allowed to these only.
# Empty in production unless your mail servers are internal; `make run`/`make test` put their
# own loopback Dovecot here (scripts/devservices.py).
OUTBOUND_ALLOWED_NETWORKS = env.list("OUTBOUND_ALLOWED_NETWORKS", default=[])
# Hosts typed by staff users (is_staff: the admin, or the API) may be internal addresses; the
# account keeps that rule for its syncs. Off: staff are held to the allow list like everyone.
OUTBOUND_STAFF_ALLOW_INTERNAL = env.bool("OUTBOUND_STAFF_ALLOW_INTERNAL", default=True)
# Connection tests (account creation, test-connection, a new password): connect and greeting
# timeout in seconds (a sync uses its own, longer one).
OUTBOUND_TEST_TIMEOUT_SECONDS = env.float("OUTBOUND_TEST_TIMEOUT_SECONDS", default=10.0)
# Sending mail: the timeout in seconds of each SMTP step (connect, each reply; the final reply to
# DATA too: a server that takes longer leaves the message's outcome unknown).
SMTP_TIMEOUT_SECONDS = env.float("SMTP_TIMEOUT_SECONDS", default=60.0)
try:
    from emailplatform.netguard import parse_allow_list as _parse_allow_list

    _parse_allow_list(tuple(OUTBOUND_ALLOWED_NETWORKS))
except ValueError as _exc:
    raise ImproperlyConfigured(f"OUTBOUND_ALLOWED_NETWORKS: {_exc}") from _exc

# Prometheus metrics at /metrics (emailplatform.observability): served to a scraper that sends
# `Authorization: Bearer <METRICS_TOKEN>`, or whose address is in METRICS_ALLOWED_NETWORKS
# (comma separated CIDRs; behind NUM_PROXIES proxies, the address the outermost one saw).
# Neither set: /metrics answers 403 to everyone.
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=[])
try:
    from emailplatform.observability.networks import parse_networks as _parse_networks

    _parse_networks(tuple(METRICS_ALLOWED_NETWORKS))
except ValueError as _exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {_exc}") from _exc

# Webhooks (the webhooks app, README "Webhooks"). Each delivery is a POST with this timeout
# (connect and read, each); a failure is retried after RETRY_BASE seconds, doubling up to
# RETRY_MAX (with jitter); a delivery still failing GIVE_UP seconds after its first failure
# disables its endpoint, with the reason. A pass sends for at most PASS_SECONDS, then yields
# the worker. Beat sweeps every SWEEP_SECONDS for retries that are due. CA_CERTS: a CA bundle
# to trust instead of the system's (tests, private CAs). Endpoint URLs obey the outbound rules
# above (OUTBOUND_ALLOWED_NETWORKS: plain http only to those hosts).
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
WEBHOOK_RETRY_BASE_SECONDS = env.float("WEBHOOK_RETRY_BASE_SECONDS", default=30.0)
WEBHOOK_RETRY_MAX_SECONDS = env.float("WEBHOOK_RETRY_MAX_SECONDS", default=60 * 60)
WEBHOOK_GIVE_UP_SECONDS = env.int("WEBHOOK_GIVE_UP_SECONDS", default=24 * 60 * 60)
WEBHOOK_PASS_SECONDS = env.float("WEBHOOK_PASS_SECONDS", default=20.0)
WEBHOOK_SWEEP_SECONDS = env.int("WEBHOOK_SWEEP_SECONDS", default=15)
WEBHOOK_CA_CERTS = env("WEBHOOK_CA_CERTS", default=None)
WEBHOOK_ENDPOINT_CACHE_SECONDS = env.float("WEBHOOK_ENDPOINT_CACHE_SECONDS", default=5.0)
WEBHOOK_MAX_ENDPOINTS = env.int("WEBHOOK_MAX_ENDPOINTS", default=20)
