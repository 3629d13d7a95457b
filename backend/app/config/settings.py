"""Application settings: the only place that reads the environment."""

import ipaddress
import itertools
import logging
import math
import os
import re
import secrets
import string
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.config.breakers import DEFAULT_BREAKER_OVERRIDES, BreakerName, BreakerOverride
from app.config.priorities import (
    DEFAULT_ATTEMPT_AUTH_PATHS,
    DEFAULT_ATTEMPT_END_PATHS,
    DEFAULT_METHOD_PRIORITIES,
    DEFAULT_NEVER_SHED_PATHS,
    DEFAULT_PRIORITY_PATHS,
    DEFAULT_PRIORITY_PREFIXES,
    DEFAULT_QUEUES,
    Priority,
    PriorityQueue,
    PriorityRule,
)
from app.config.rate_limits import (
    DEFAULT_EXACT_PATHS,
    DEFAULT_EXEMPT_PATHS,
    DEFAULT_METHOD_CATEGORIES,
    DEFAULT_PREFIX_RULES,
    DEFAULT_TIERS,
    PathRule,
    RateLimitTier,
)

logger = logging.getLogger(__name__)

BACKEND_DIR = Path(__file__).resolve().parents[2]

# Values people paste from examples; never acceptable outside development.
PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "secret", "your-secret-key", "jwt-secret", "development", "test"}
)
MIN_SECRET_LENGTH = 32
# Outside development the JWT key must carry at least 32 bytes of entropy (HS256's key size).
MIN_SECRET_ENTROPY_BITS = 256
_HEX_DIGITS = frozenset(string.hexdigits)
_ZLIB_FRAME_BYTES = len(zlib.compress(b"", 9))
# A phrase: words (lower case, Capitalised or UPPER) and numbers between separators.
_PHRASE = re.compile(
    r"[^A-Za-z0-9]*(?:[A-Z]?[a-z]+|[A-Z]+)(?:[^A-Za-z0-9]+(?:[A-Z]?[a-z]+|[A-Z]+|\d+))*[^A-Za-z0-9]*"
)
# Generous: a word from a 128k-word dictionary (diceware's list gives 12.9 bits per word).
_BITS_PER_WORD = 17.0
# Postgres advisory lock key held by `alembic upgrade` (migrations/env.py) so concurrent runs
# apply the migrations once; arbitrary but fixed: every migrator must use the same one.
MIGRATIONS_LOCK_KEY = 0x68705F6D69677261  # "hp_migra" in ASCII


class Settings(BaseSettings):
    """Typed settings, read from environment variables (and `.env`), e.g. DATABASE_URL."""

    # hide_input_in_errors: a refused value (a short JWT_SECRET, a URL with a password) must
    # not be printed in the start-up error that lands in the deploy logs.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    environment: Literal["development", "staging", "production"] = "development"
    app_name: str = "Hiring Pro API"
    app_version: str = "1.0.0"
    data_dir: Path = BACKEND_DIR / ".data"

    # Database. No DATABASE_URL means the embedded SQLite file under data_dir.
    database_url: str | None = None
    use_external_pooler: bool = False
    # Direct (session-mode) URL for migrations, e.g. Supavisor port 5432 or the database host
    # itself: DDL never goes through the transaction pooler. The app itself uses DATABASE_URL.
    database_direct_url: str | None = None
    db_pool_size: int = Field(20, ge=1)
    # No overflow connections by default: QueuePool closes an overflow connection as
    # soon as it is returned, so any sustained concurrency above pool_size reconnects on almost
    # every request (measured: +500 us CPU per request on the read path, bench/read_routes).
    # pool_size is the per-process cap; requests beyond it wait up to db_pool_timeout_seconds.
    db_max_overflow: int = Field(0, ge=0)
    db_pool_timeout_seconds: float = Field(10.0, gt=0)
    # asyncpg pool for the hottest reads (job listing and detail), beside the engine's pool.
    db_read_pool_size: int = Field(10, ge=1)
    db_pool_recycle_seconds: int = Field(300, ge=1)
    # Behind a transaction pooler (USE_EXTERNAL_POOLER): client connections to the pooler each
    # process keeps open for its transactions, beside the read pool; 0 opens one per
    # transaction (NullPool). Keeping them made writes 1.36x faster (bench/pooler); budget the
    # pooler's client limit: instances x workers x (this + DB_READ_POOL_SIZE).
    db_pooler_client_pool_size: int = Field(10, ge=0)
    # TLS to Postgres or the pooler for the engine and the read pool alike (asyncpg's sslmode
    # names); unset leaves asyncpg's default (PGSSLMODE, else "prefer"). Not in DATABASE_URL:
    # the two drivers' URLs spell it differently.
    db_ssl: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] | None = None
    db_statement_timeout_ms: int = Field(30_000, ge=0)
    # A statement waiting for a row or table lock gives up after this (504 database_timeout),
    # so one long lock cannot park every connection of the pool until the statement timeout.
    db_lock_timeout_ms: int = Field(5_000, ge=0)
    # Budget of the hot reads on the read pool (job listing and detail): shorter than the
    # statement timeout, so a slow listing gives its connection back long before a report would.
    db_read_statement_timeout_ms: int = Field(5_000, ge=0)
    # Budget of the admin reads (dashboard, candidate lists and search, results), set per
    # transaction: longer than an ordinary route's, and below the ALB's and gunicorn's 60 s.
    db_admin_statement_timeout_ms: int = Field(50_000, ge=0)
    # Each area of routes may hold at most this share of the main pool's connections (at least
    # one), so a lock on one area's tables parks only that area's requests: test taking
    # (/api/tests), admin (/api/admin) and everything else. The shares may add up to more than 1;
    # 1 lets an area take the whole pool. An area over its share waits DB_POOL_TIMEOUT_SECONDS
    # for one of its connections, then gets 503 service_busy.
    db_assessments_pool_share: float = Field(0.6, gt=0, le=1)
    db_admin_pool_share: float = Field(0.3, gt=0, le=1)
    db_default_pool_share: float = Field(0.6, gt=0, le=1)
    db_application_name: str = "hiring-pro-backend"

    # Redis. No REDIS_URL means the in-process memory backend.
    redis_url: str | None = None
    redis_pool_size: int = Field(20, ge=1)
    redis_mode: Literal["standalone", "sentinel", "cluster"] = "standalone"
    redis_sentinel_hosts: str = ""
    redis_sentinel_master: str = "mymaster"
    redis_socket_timeout_seconds: float = Field(0.25, gt=0)
    redis_connect_timeout_seconds: float = Field(0.25, gt=0)
    redis_health_check_interval_seconds: int = Field(30, ge=0)
    # Client retries: connection errors only (a timed-out script may have run), with short backoff.
    redis_retry_attempts: int = Field(1, ge=0)
    redis_retry_backoff_base_seconds: float = Field(0.005, gt=0)
    redis_retry_backoff_cap_seconds: float = Field(0.05, gt=0)
    # Breaker around Redis itself: after a failure skip Redis this long, doubling up to the max.
    redis_backoff_seconds: float = Field(1.0, gt=0)
    redis_backoff_max_seconds: float = Field(10.0, gt=0)

    cache_enabled: bool = True
    # Cache: fresh TTL per category in seconds (JSON in the environment).
    cache_ttl_seconds: dict[str, float] = Field(
        default_factory=lambda: {
            "search_results": 300.0,
            "job_listings": 600.0,
            "test_config": 3600.0,
            "ai_response": 86400.0,
            "user_profile": 300.0,
            "admin_dashboard": 30.0,
            "default": 300.0,
        }
    )
    cache_key_prefix: str = Field("hpc", pattern=r"^[A-Za-z0-9_.-]+$")
    # After its TTL an entry stays servable this fraction of the TTL longer while one caller
    # recomputes it (stale-while-revalidate); 0 turns that off.
    cache_stale_ratio: float = Field(0.25, ge=0)
    # Fresh TTLs vary by +/- this fraction so entries written together do not expire together.
    cache_ttl_jitter: float = Field(0.1, ge=0, lt=1)
    # How long one process may hold a key's recompute lock; others wait at most this long.
    cache_lock_ttl_seconds: float = Field(5.0, gt=0)
    rate_limit_enabled: bool = True
    # The limiter's table (app/config/rate_limits.py); each is JSON in the environment.
    # Every category has its own bucket (there is no single requests-per-minute/burst pair);
    # requests that no rule names use the `default` tier (100/min).
    rate_limit_tiers: dict[str, RateLimitTier] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    rate_limit_exact_paths: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_EXACT_PATHS)
    )
    rate_limit_prefix_rules: list[PathRule] = Field(
        default_factory=lambda: list(DEFAULT_PREFIX_RULES)
    )
    rate_limit_method_categories: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_METHOD_CATEGORIES)
    )
    rate_limit_exempt_paths: list[str] = Field(default_factory=lambda: list(DEFAULT_EXEMPT_PATHS))
    # Web processes sharing the limits (instances x workers). With Redis down each process
    # enforces 1/N of every tier, so the fleet as a whole stays near the configured limit.
    rate_limit_expected_processes: int = Field(4, ge=1)
    rate_limit_local_max_keys: int = Field(100_000, ge=100)
    # Decisions made in the same event-loop turn share one EVALSHA (not on Cluster).
    rate_limit_batch_max: int = Field(64, ge=1)
    # Circuit breakers (app/config/breakers.py): these two are every breaker's failures before
    # opening and seconds open before a probe. CIRCUIT_BREAKERS (JSON) overrides them per breaker
    # (gemini, pinecone, cloudinary, s3) with failure_threshold, recovery_timeout,
    # success_threshold (probes that close it, default 2) and half_open_max_calls (default 1),
    # e.g. CIRCUIT_BREAKERS='{"gemini": {"failure_threshold": 3, "recovery_timeout": 10}}'.
    # Its default gives Gemini 60 s to recover; a value replaces the whole default.
    circuit_breaker_failure_threshold: int = Field(5, ge=1)
    circuit_breaker_recovery_timeout: float = Field(30.0, gt=0)
    circuit_breakers: dict[BreakerName, BreakerOverride] = Field(
        default_factory=lambda: dict(DEFAULT_BREAKER_OVERRIDES)
    )

    # External services (app/services/ai.py, vector_search.py, storage.py). "local" is the
    # deterministic in-process implementation; the others are real clients behind breakers.
    ai_backend: Literal["local", "gemini"] = "local"
    gemini_api_key: SecretStr | None = None
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    gemini_model: str = "gemini-2.5-flash"
    gemini_timeout_seconds: float = Field(20.0, gt=0)
    vector_backend: Literal["local", "pinecone"] = "local"
    pinecone_api_key: SecretStr | None = None
    # The index's data-plane host from the Pinecone console (https://<index>-<project>.svc...).
    pinecone_index_host: str | None = None
    pinecone_namespace: str = "candidates"
    pinecone_timeout_seconds: float = Field(5.0, gt=0)
    vector_dimension: int = Field(512, ge=8)
    storage_backend: Literal["local", "s3", "cloudinary"] = "local"
    s3_bucket: str | None = None
    # S3-compatible endpoint (Supabase Storage's S3 URL, MinIO, ...); None means AWS S3.
    s3_endpoint_url: str | None = None
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_timeout_seconds: float = Field(10.0, gt=0)
    # Cloudinary (raw, private resources): cloud name, API key and secret from its console.
    cloudinary_cloud_name: str | None = None
    cloudinary_api_key: str | None = None
    cloudinary_api_secret: SecretStr | None = None
    cloudinary_base_url: str = "https://api.cloudinary.com"
    cloudinary_timeout_seconds: float = Field(20.0, gt=0)
    http_max_connections: int = Field(100, ge=1)

    # Client IP: how many proxies append to X-Forwarded-For in front of us (EB: ALB + nginx = 2).
    trusted_proxy_count: int = Field(0, ge=0)
    # Or the proxies' networks (JSON list, e.g. ["127.0.0.1/32", "10.0.0.0/16"]); wins when set.
    trusted_proxy_cidrs: list[str] = Field(default_factory=list)

    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = None
    queue_backend: Literal["local", "sqs"] = "local"
    # Job queue and worker tier (app/services/job_queue.py, sqs_queue.py, app/worker/).
    # One queue per task (hiring-pro-<task>); point several at one queue to share it.
    sqs_queue_resume_parse: str = "hiring-pro-resume-parse"
    sqs_queue_vector_index: str = "hiring-pro-vector-index"
    sqs_queue_email: str = "hiring-pro-email"
    # botocore "standard" retries: throttling, 5xx and connection errors, exponential backoff.
    sqs_max_attempts: int = Field(5, ge=1)
    sqs_timeout_seconds: float = Field(5.0, gt=0)
    # Must equal the queues' redrive maxReceiveCount: the receive whose failure is final.
    worker_max_receive_count: int = Field(3, ge=1)
    # QUEUE_BACKEND=local: in-process jobs at once, retried after the delay like sqsd would.
    local_queue_concurrency: int = Field(4, ge=1)
    local_queue_retry_delay_seconds: float = Field(2.0, ge=0)
    # Worker routes answer loopback clients only (the local sqsd); tests may lift that.
    worker_allow_remote: bool = False
    # cleanup-sessions: expired attempts get this grace to be completed, then are abandoned;
    # abandoned ones are deleted after the retention, idempotency records after theirs.
    attempt_abandon_grace_minutes: int = Field(10, ge=0)
    abandoned_attempt_retention_hours: int = Field(24, ge=1)
    processed_job_retention_days: int = Field(14, ge=1)
    # Email: SMTP when SMTP_HOST is set, otherwise a logged outbox in the database.
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_timeout_seconds: float = Field(10.0, gt=0)
    email_from: str = "Hiring Pro <no-reply@hiring-pro.local>"
    password_reset_url: str = "http://localhost:3000/reset-password"

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    enable_request_logging: bool = True
    # "auto": JSON lines outside development, readable text in development.
    log_format: Literal["auto", "json", "text"] = "auto"

    # Operations (app/routers/health.py, app/observability/, app/middleware/shutdown.py).
    # Per-dependency budget of /health/ready, so a hung dependency cannot hang the probe.
    health_check_timeout_seconds: float = Field(1.0, gt=0)
    # Clients allowed to read /health/detailed and /metrics without an admin token
    # (comma-separated CIDRs; the client address is resolved through TRUSTED_PROXY_COUNT).
    ops_allowed_networks: Annotated[
        tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode
    ] = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))
    # At shutdown, how long the lifespan waits for in-flight requests before closing resources.
    shutdown_drain_timeout_seconds: float = Field(25.0, ge=0)
    # Set by gunicorn.conf.py (read by prometheus_client itself too): multiprocess metrics.
    prometheus_multiproc_dir: Path | None = None

    # Auth.
    jwt_secret: SecretStr | None = None
    access_token_expire_minutes: int = Field(60, ge=1, le=24 * 60)
    # Argon2id cost (OWASP's minimum profile): cheap enough for login bursts, tunable per deploy.
    password_hash_time_cost: int = Field(2, ge=1)
    password_hash_memory_kib: int = Field(19_456, ge=8)

    # Attempt policy of a test that sets none (app/domain/attempts.py). One attempt, as hiring
    # assessments usually allow: a retake would let a candidate compare scores to probe the key.
    assessment_max_attempts: int = Field(1, ge=1, le=100)
    # Minutes after a finished (completed or abandoned) attempt before the next may start.
    assessment_retake_cooldown_minutes: int = Field(24 * 60, ge=0, le=365 * 24 * 60)

    # Token versions (app/domain/token_versions.py): how long a process trusts its own copy of
    # an account's state (how soon a revocation reaches every process), and how long the shared
    # Redis copy lives (bounds staleness should a change's Redis write be lost).
    token_version_local_ttl_seconds: float = Field(2.0, gt=0, le=60)
    token_version_redis_ttl_seconds: int = Field(60, ge=1, le=24 * 3600)

    # Bounded cost per request (app/domain/resume_sandbox.py, app/middleware/body_limit.py,
    # app/routers/health.py).
    # CPU seconds one resume parse may use (its child process is killed past them).
    resume_parse_cpu_seconds: int = Field(5, ge=1, le=300)
    # Address-space cap of a resume parser process, in MiB.
    resume_parse_memory_mb: int = Field(512, ge=128)
    # Wall-clock deadline of one resume parse, process start included.
    resume_parse_timeout_seconds: float = Field(30.0, gt=0)
    # Resume parser processes running at once per server or worker process.
    resume_parse_concurrency: int = Field(2, ge=1, le=32)
    # Largest request body outside the resume upload (which has MAX_RESUME_BYTES); above the
    # largest body the schemas accept (a 20,000-character job description, \u-escaped).
    max_request_body_bytes: int = Field(256 * 1024, ge=1024)
    # How long one process reuses a /health/ready result (0: check on every probe).
    health_ready_cache_seconds: float = Field(1.0, ge=0, le=30)

    # Production guards (Settings._check_production, check_web_app): outside development
    # start-up refuses each of these unless its ALLOW_* setting says it is meant.
    # The embedded SQLite file (no DATABASE_URL): one instance's private database.
    allow_sqlite: bool = False
    # No REDIS_URL: rate limits, cache and token checks per process, wrong for a fleet.
    allow_no_redis: bool = False
    # Web app without TRUSTED_PROXY_COUNT / TRUSTED_PROXY_CIDRS: only when clients connect directly.
    allow_direct_clients: bool = False
    # A JWT_SECRET of 32+ characters rated below 256 bits (a missing or placeholder one never).
    allow_low_entropy_jwt_secret: bool = False
    # /docs, /redoc and /openapi.json; unset: served in development only.
    api_docs_enabled: bool | None = None

    # Auth limits beside the per-address auth tier (app/services/ratelimit/auth_limits.py), off
    # with RATE_LIMIT_ENABLED=false. Failed logins per account (normalised e-mail) per window
    # before addresses that never logged in to it are refused with 429 (default 10 per 15 min).
    login_account_failure_limit: int = Field(10, ge=1)
    login_account_failure_window_seconds: int = Field(900, ge=1)
    # Failed logins per client address across accounts, against spraying (default 30 per hour).
    login_address_failure_limit: int = Field(30, ge=1)
    login_address_failure_window_seconds: int = Field(3600, ge=1)
    # An address that logged in to an account passes its limits this long (default 30 days);
    # at most this many addresses are remembered per account (default 20, the oldest dropped).
    login_known_address_days: int = Field(30, ge=1)
    login_known_addresses_max: int = Field(20, ge=1)
    # Password-reset e-mails per recipient per window (default 3 per hour); the extra requests
    # get the same 202 and send nothing.
    reset_email_limit: int = Field(3, ge=1)
    reset_email_window_seconds: int = Field(3600, ge=1)

    # Worker job time budget and cron slots (app/worker/delivery.py, app/worker/cron_slots.py).
    # Wall-clock seconds one job may run (worker tier and QUEUE_BACKEND=local alike) before it
    # is cut off, rolled back and answered 504 for a retry. Keep it plus 10 s (for recording a
    # give-up) below sqsd's InactivityTimeout (180 s), so the app ends a slow job itself instead
    # of sqsd redelivering it while the first run still works.
    worker_job_timeout_seconds: float = Field(150.0, gt=0)
    # EB's cron.yaml: the schedule a cron delivery without X-Aws-Sqsd-Scheduled-At belongs to
    # (without the file, or the task in it: the minute the delivery arrived in).
    worker_cron_file: Path = BACKEND_DIR.parent / "cron.yaml"

    # Overload protection: bounded password hashing (app/domain/auth.py PasswordService) and the
    # fleet-wide concurrent-request limit per identity (app/services/ratelimit/concurrency.py,
    # app/middleware/concurrency_limit.py).
    # Argon2 hashes running at once per process, each in a thread of the process's own pool (argon2
    # releases the GIL, so each takes a core). One: with gunicorn's 2 x cores workers, hashing can
    # take at most half of the CPU while the event loops want the other half, and all of it when
    # they do not; the default thread pool let one process run cores + 4 at once.
    password_hash_concurrency: int = Field(1, ge=1, le=32)
    # Hashes allowed to wait for a thread per process: one more login, registration or reset is
    # answered 503 login_overloaded with Retry-After at once. 8 waits are ~0.4 s at production cost
    # (~45 ms a hash): past that, telling the client to come back beats a queue nobody drains.
    password_hash_queue_max: int = Field(8, ge=0)
    # A waiting hash not started within this long is dropped and answered the same way: the queue
    # barely moves (a CPU starved by other work), so the wait would not end soon either.
    password_hash_wait_seconds: float = Field(2.0, gt=0)
    concurrency_limit_enabled: bool = True
    # Requests in flight at once, fleet-wide, per user of a valid bearer token: far above what a
    # browser tab sends (a test page keeps 1-3 going), low enough that one account cannot occupy
    # the fleet with slow requests.
    concurrency_limit_per_user: int = Field(10, ge=1)
    # The same per client address (requests without a valid token), higher because an office or
    # campus NAT puts many people behind one address.
    concurrency_limit_per_address: int = Field(50, ge=1)
    # A lease ends with its request; this bounds one whose release was lost (a killed worker, a
    # Redis outage). Above the longest request (ALB idle and gunicorn timeouts 60 s, admin reads
    # 50 s): a lease expiring under a running request would give its identity an extra slot.
    concurrency_lease_ttl_seconds: int = Field(120, ge=1)
    # Paths never limited (probes and scrapes must get through whatever a client does).
    concurrency_limit_exempt_paths: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXEMPT_PATHS)
    )

    # Overload protection (app/middleware/load_shedder.py, app/services/overload): a per-process
    # adaptive concurrency limit that queues briefly and sheds by priority (503 `overloaded`).
    # Off: every request goes straight through, nothing is measured.
    overload_enabled: bool = True
    # The limit's floor, start and ceiling (requests running at once in one process). The floor
    # is always admitted; the start is high enough that ordinary bursts are never queued.
    overload_min_limit: int = Field(8, ge=1)
    overload_initial_limit: int = Field(64, ge=1)
    overload_max_limit: int = Field(256, ge=1)
    # Latency may reach this multiple of a route's no-load latency before the limit shrinks.
    overload_latency_tolerance: float = Field(2.0, ge=1.0)
    # Added to latency and no-load latency before comparing them: interleaving that costs less
    # than this is not congestion (in a CPU-bound worker every concurrent request slows the
    # others), nor is sub-millisecond jitter.
    overload_latency_allowance_ms: float = Field(20.0, gt=0)
    # Share of each window's new estimate in the limit (1: jump at once; lower: steadier).
    overload_smoothing: float = Field(0.5, gt=0, le=1)
    # The limit moves once per window: at least this long and this many finished requests.
    overload_window_seconds: float = Field(0.2, gt=0)
    overload_window_min_samples: int = Field(20, ge=1)
    # Time constant with which a route's no-load latency follows slower answers under load (so
    # a surge is not learnt as the new normal, but a route that became slower for good is).
    overload_baseline_rise_seconds: float = Field(120.0, gt=0)
    # Event-loop lag (measured every interval) above the threshold shrinks the limit like latency.
    overload_lag_interval_seconds: float = Field(0.1, gt=0)
    overload_lag_threshold_seconds: float = Field(0.05, gt=0)
    # Requests waiting for a database connection (mean) above this shrink the limit too.
    overload_db_waiters_threshold: float = Field(4.0, ge=1)
    # Background requests may fill this share of the limit; the rest is kept for the others.
    overload_background_share: float = Field(0.75, gt=0, le=1)
    # Critical requests may run this fraction above the limit (at least one more).
    overload_critical_headroom: float = Field(0.5, ge=0)
    # Queue size, wait and Retry-After per priority (app/config/priorities.py), JSON.
    overload_queues: dict[Priority, PriorityQueue] = Field(
        default_factory=lambda: dict(DEFAULT_QUEUES)
    )
    # The priority table (app/config/priorities.py); each is JSON in the environment. Requests
    # no rule names are normal; the never-shed paths bypass the shedder entirely.
    overload_priority_paths: dict[str, Priority] = Field(
        default_factory=lambda: dict(DEFAULT_PRIORITY_PATHS)
    )
    overload_priority_prefixes: list[PriorityRule] = Field(
        default_factory=lambda: list(DEFAULT_PRIORITY_PREFIXES)
    )
    overload_method_priorities: dict[str, Priority] = Field(
        default_factory=lambda: dict(DEFAULT_METHOD_PRIORITIES)
    )
    overload_never_shed_paths: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NEVER_SHED_PATHS)
    )
    # Logins that are critical for a user seen taking a test within the marker's lifetime
    # (app/services/overload/markers.py); the end paths clear the marker.
    overload_attempt_auth_paths: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ATTEMPT_AUTH_PATHS)
    )
    overload_attempt_end_paths: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ATTEMPT_END_PATHS)
    )
    overload_attempt_marker_seconds: int = Field(1800, ge=60)

    max_resume_bytes: int = Field(5 * 1024 * 1024, ge=1024)

    @field_validator("ops_allowed_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(
                ipaddress.ip_network(part.strip(), strict=False)
                for part in value.split(",")
                if part.strip()
            )
        return value

    @field_validator("trusted_proxy_cidrs")
    @classmethod
    def _check_proxy_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @model_validator(mode="after")
    def _check_production(self) -> "Settings":
        """Outside development, refuse what is unsafe or silently wrong unless allowed.

        Every problem is reported at once, naming the setting to fix and its ALLOW_* setting;
        never a secret's value.
        """
        if self.environment == "development":
            return self
        problems = [*self._jwt_secret_problems()]
        if not self.database_url and not self.allow_sqlite:
            problems.append(
                "DATABASE_URL is not set, so the app would use the embedded SQLite file (one "
                "instance's private database): set DATABASE_URL, or ALLOW_SQLITE=true"
            )
        if not self.redis_url and not self.allow_no_redis:
            problems.append(
                "REDIS_URL is not set, so rate limits and the cache would be per process: set "
                "REDIS_URL, or ALLOW_NO_REDIS=true"
            )
        if problems:
            raise ValueError(
                f"unsafe settings for ENVIRONMENT={self.environment}: " + "; ".join(problems)
            )
        return self

    def _jwt_secret_problems(self) -> list[str]:
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
        advice = (
            f"JWT_SECRET must be set to a random value of at least {MIN_SECRET_LENGTH} characters "
            f"and {MIN_SECRET_ENTROPY_BITS} bits of entropy when ENVIRONMENT={self.environment} "
            "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
        if len(secret) < MIN_SECRET_LENGTH or secret.lower() in PLACEHOLDER_SECRETS:
            return [advice]
        if (
            estimate_entropy_bits(secret) < MIN_SECRET_ENTROPY_BITS
            and not self.allow_low_entropy_jwt_secret
        ):
            return [
                f"{advice}; this one looks repetitive, sequential, like a phrase or too short "
                "for its alphabet (if it is random after all: ALLOW_LOW_ENTROPY_JWT_SECRET=true)"
            ]
        return []

    def check_web_app(self) -> None:
        """Refuse to serve the web app outside development with no trusted proxy setting.

        Behind the ALB and nginx every client would then be the proxy: one shared rate limit,
        and the operator allowlist open to everyone. The worker app (loopback sqsd) skips this.
        """
        if (
            self.environment != "development"
            and self.trusted_proxy_count == 0
            and not self.trusted_proxy_cidrs
            and not self.allow_direct_clients
        ):
            raise ValueError(
                f"unsafe settings for ENVIRONMENT={self.environment}: TRUSTED_PROXY_COUNT is 0 "
                "and TRUSTED_PROXY_CIDRS is empty, so behind a proxy every client would look like "
                "the proxy: set TRUSTED_PROXY_COUNT (2 on Elastic Beanstalk: ALB + nginx) or "
                "TRUSTED_PROXY_CIDRS, or ALLOW_DIRECT_CLIENTS=true if clients connect directly"
            )

    @property
    def docs_enabled(self) -> bool:
        """Whether /docs, /redoc and /openapi.json are served (API_DOCS_ENABLED, else dev only)."""
        if self.api_docs_enabled is not None:
            return self.api_docs_enabled
        return self.environment == "development"

    @model_validator(mode="after")
    def _check_backends(self) -> "Settings":
        if self.ai_backend == "gemini" and self.gemini_api_key is None:
            raise ValueError("AI_BACKEND=gemini needs GEMINI_API_KEY")
        if self.vector_backend == "pinecone" and (
            self.pinecone_api_key is None or not self.pinecone_index_host
        ):
            raise ValueError(
                "VECTOR_BACKEND=pinecone needs PINECONE_API_KEY and PINECONE_INDEX_HOST"
            )
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("STORAGE_BACKEND=s3 needs S3_BUCKET")
        if self.storage_backend == "cloudinary" and not (
            self.cloudinary_cloud_name and self.cloudinary_api_key and self.cloudinary_api_secret
        ):
            raise ValueError(
                "STORAGE_BACKEND=cloudinary needs CLOUDINARY_CLOUD_NAME, CLOUDINARY_API_KEY "
                "and CLOUDINARY_API_SECRET"
            )
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL to connect to: DATABASE_URL, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'hiring_pro.db'}"

    @property
    def migrations_url(self) -> str | None:
        """The database URL for migrations: DATABASE_DIRECT_URL, else the app's own database.

        None when DATABASE_URL goes through an external (transaction) pooler and there is no
        DATABASE_DIRECT_URL: no safe URL, so migrations/env.py refuses to run (the web app does
        not need it). The embedded SQLite file has no pooler in front of it.
        """
        if self.database_direct_url:
            return self.database_direct_url
        if self.use_external_pooler and self.database_url:
            return None
        return self.sqlalchemy_url

    def jwt_signing_key(self) -> str:
        """The HS256 key. In development without JWT_SECRET, a random key kept in data_dir.

        The key is persisted (mode 0600) so tokens survive restarts and are shared by every worker
        process; it is never a fixed, guessable value.
        """
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        return _development_secret(self.data_dir)


def estimate_entropy_bits(secret: str) -> float:
    """A rough upper bound of a key's entropy in bits: the least of three estimates.

    * its length times log2 of the alphabet it uses (16 when it is all hex digits, else the
      sum of the classes seen: lower case 26, upper case 26, digits 10, others 33);
    * the zlib-compressed size of the key, or of its character-to-character steps, so
      repetitions ("abab...") and sequences ("0123...", "abcd...") count for little;
    * for a phrase (words and numbers between separators), 17 bits per word.

    secrets.token_urlsafe(48) (64 characters) rates 380 bits or more, token_hex(32) 256.
    """
    if not secret:
        return 0.0
    hex_cases = {c.islower() for c in secret if c.isalpha()}
    if all(c in _HEX_DIGITS for c in secret) and len(hex_cases) <= 1:
        alphabet = 16
    else:
        classes = (string.ascii_lowercase, string.ascii_uppercase, string.digits)
        alphabet = sum(len(chars) for chars in classes if any(c in chars for c in secret))
        alphabet += 33 * any(not any(c in chars for chars in classes) for c in secret)
    data = secret.encode()
    steps = bytes((b - a) % 256 for a, b in itertools.pairwise(data))
    compressed = min(len(zlib.compress(data, 9)), len(zlib.compress(steps, 9)))
    estimates = [len(secret) * math.log2(alphabet), (compressed - _ZLIB_FRAME_BYTES) * 8.0]
    if _PHRASE.fullmatch(secret):
        estimates.append(len(re.findall(r"[A-Za-z]+|\d+", secret)) * _BITS_PER_WORD)
    return max(0.0, min(estimates))


@lru_cache
def _development_secret(data_dir: Path) -> str:
    path = data_dir / "jwt_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        # Write a private temp file, then link it into place: concurrent workers agree on one key.
        tmp = data_dir / f"jwt_secret.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)
            logger.warning("JWT_SECRET not set: generated a development key in %s", path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text(encoding="utf-8").strip()


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
