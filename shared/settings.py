"""Settings from the environment, read in one place for web, worker and CLI.

Every ``STYLEQUEUE_*`` variable is read here and nowhere else (:data:`ENV_VARS` lists them;
the README's configuration table documents each): the service's in :func:`load_settings`,
the engine's knobs in :func:`load_engine_settings` (the worker and ``stylequeue transfer``
pass them to the engine, which reads no settings itself), ``stylequeue submit``'s in
:func:`load_client_settings`.

Nothing here is read at import time: call :func:`get_settings` (cached) or the ``load_*``
functions with an explicit mapping (tests).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from stylequeue.shared import bounds
from stylequeue.shared.memory import parse_bytes
from stylequeue.shared.scheduling import OWNER_SLOTS
from stylequeue.shared.text import FALSE_WORDS, parse_bool, parse_int

PREFIX = "STYLEQUEUE_"
# Every variable the loaders below read; the README's configuration table lists the same set
# (tests/shared/test_settings.py checks both, and that no other STYLEQUEUE_* name is used).
ENV_VARS: tuple[str, ...] = tuple(
    PREFIX + name
    for name in (
        # the service: web, worker, sweeper
        "DATABASE_URL", "REDIS_URL", "STORAGE_URL", "S3_ENDPOINT_URL", "SECRET_KEY",
        "API_TOKENS", "COOKIE_SECURE", "MAX_UPLOAD_BYTES", "MAX_IMAGE_PIXELS", "MAX_SIZE",
        "MAX_ITERATIONS", "MAX_STYLES", "MAX_ACTIVE_JOBS", "JOB_SOFT_TIME_LIMIT",
        "JOB_TIME_LIMIT", "PROGRESS_MAXLEN", "PROGRESS_TTL_SECONDS", "LOCK_TTL_SECONDS",
        "QUEUED_GRACE_SECONDS", "CHECKPOINT_SECONDS", "SHUTDOWN_GRACE_SECONDS", "VAR_DIR",
        "METRICS_TOKEN", "ADMIN_TOKENS", "OWNER_SLOTS", "RETENTION_DAYS",
        # webhooks (shared/webhook_*.py, the hooks worker)
        "WEBHOOK_SECRET", "WEBHOOK_PROGRESS_SECONDS", "WEBHOOK_ALLOW_PRIVATE",
        "WEBHOOK_ALLOW_HTTP", "WEBHOOK_TIMEOUT_SECONDS", "WEBHOOK_BACKOFF_SECONDS",
        "WEBHOOK_RETRY_WINDOW_SECONDS",
        # a public deployment's bounds (web)
        "ANONYMOUS", "ANONYMOUS_MAX_ACTIVE_JOBS", "MAX_ACTIVE_JOBS_PER_ADDRESS",
        "STORAGE_QUOTA_BYTES", "SUBMIT_RATE_LIMIT", "AUTH_FAILURE_RATE_LIMIT", "TRUSTED_PROXIES",
        # the engine (worker and `stylequeue transfer`)
        "VGG19_WEIGHTS", "PRECISION", "ENGINE_XLA", "ENGINE_DETERMINISTIC", "WORKER_MEMORY",
        # `stylequeue submit` and `stylequeue fleet`
        "SERVER", "API_TOKEN", "ADMIN_TOKEN",
    )
)  # fmt: skip
TOKEN_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Flask-Limiter's (the ``limits`` package's) notation: "30/minute;300/hour", or "off"
RATE_LIMIT_RE = re.compile(
    r"\s*\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day|month|year)s?\s*"
    r"([;,]\s*\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day|month|year)s?\s*)*",
    re.ASCII,
)


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


@dataclass(frozen=True)
class Limits:
    """What one job may ask for. Checked by the web before anything is stored."""

    max_upload_bytes: int = 20 * 1024 * 1024  # whole request
    max_image_pixels: int = 40_000_000  # decoded pixels per uploaded image
    max_size: int = 1024  # longest side of the output
    max_iterations: int = 2000
    max_styles: int = 4
    max_active_jobs: int = 10  # queued + running jobs one owner may have at once (429 above)


@dataclass(frozen=True)
class EngineSettings:
    """The engine's knobs: read here, passed to the engine by the worker and the CLI."""

    vgg19_weights: str = "imagenet"
    precision: str = "auto"  # auto | float32 | mixed_bfloat16
    xla: bool = False  # compile the step with XLA (jit_compile)
    deterministic: bool | None = None  # op determinism; None: auto (on where a GPU is)
    # memory budget in bytes (shared.memory); None: what the machine has (worker, CLI)
    worker_memory: int | None = None


@dataclass(frozen=True)
class ClientSettings:
    """``stylequeue submit`` and ``stylequeue fleet``: where the service is and who we are."""

    server: str = "http://127.0.0.1:8000"
    api_token: str | None = None
    admin_token: str | None = None  # `stylequeue fleet`: one of the server's admin tokens


@dataclass(frozen=True)
class WebhookSettings:
    """Job webhooks: signing, the progress throttle, where they may go, retries."""

    # ``whsec_...``: signs every delivery when set (else each owner's own secret signs)
    secret: str | None = field(default=None, repr=False)
    progress_seconds: int = 5  # at most one ``progress`` event per job this often
    allow_private: bool = False  # loopback/private receivers (tests, `make run`)
    allow_http: bool = False  # plain-http receivers (else https only)
    timeout_seconds: float = 10.0  # one attempt's whole request
    backoff_seconds: float = 30.0  # the first retry's delay; doubled each time (capped)
    retry_window_seconds: int = 24 * 3600  # no attempt later than this after the event


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    storage_url: str
    s3_endpoint_url: str | None
    vgg19_weights: str
    secret_key: str
    # token -> owner id; owner ids of API callers look like "api:<name>"
    api_tokens: Mapping[str, str] = field(default_factory=dict)
    # token -> "admin:<name>": operators (the fleet view, /api/v1/admin/*); owns no jobs
    admin_tokens: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    progress_maxlen: int = 20_000  # entries kept per job stream
    progress_ttl_seconds: int = 3 * 24 * 3600  # stream kept after the job ends
    job_soft_time_limit: int = 3600
    job_time_limit: int = 3660
    lock_ttl_seconds: int = 60  # per-job lock, renewed while the job runs
    queued_grace_seconds: int = 60  # sweeper re-enqueues rows queued longer than this
    checkpoint_seconds: int = 30  # a running job's state goes to storage this often; 0: never
    # a worker told to stop (SIGTERM) gives its running job this long to checkpoint and go
    # back to the queue (Celery's worker_soft_shutdown_timeout); compose waits a bit longer
    shutdown_grace_seconds: int = 10
    # fair share: at most this many of one owner's jobs in the broker (shared/scheduling.py)
    owner_slots: int = OWNER_SLOTS
    # finished jobs are deleted (row, files, stream) this many days after they ended; 0: kept
    # forever (shared/retention.py)
    retention_days: int = 30
    var_dir: str = "./var"
    cookie_secure: bool = False  # session cookie only over HTTPS (set behind TLS)
    # bearer token for GET /metrics; None: only loopback callers may scrape
    metrics_token: str | None = None
    precision: str = "auto"  # engine precision of this worker: auto | float32 | mixed_bfloat16
    engine_xla: bool = False  # see EngineSettings
    # ---- a public deployment's bounds (web/limits.py, shared/quota.py) ----
    anonymous: bool = True  # False: submitting needs an API token (the pages say so)
    anonymous_max_active_jobs: int = 50  # queued + running jobs of all browser sessions together
    max_active_jobs_per_address: int = 10  # ... of the browser sessions of one client address
    storage_quota_bytes: int = 500 * 1024 * 1024  # stored inputs per owner; 0: no quota
    submit_rate_limit: str = "20/minute;200/hour"  # submissions per client address; "": none
    auth_failure_rate_limit: str = "10/minute;100/hour"  # refused credentials per address
    trusted_proxies: int = 0  # reverse proxies in front whose X-Forwarded-* headers count
    engine_deterministic: bool | None = None
    webhooks: WebhookSettings = field(default_factory=lambda: WebhookSettings())
    worker_memory: int | None = None  # see EngineSettings

    @property
    def engine(self) -> EngineSettings:
        return EngineSettings(
            self.vgg19_weights,
            self.precision,
            self.engine_xla,
            self.engine_deterministic,
            self.worker_memory,
        )


def _int(
    env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    try:
        value = -parse_int(text[1:]) if text.startswith("-") else parse_int(text)
    except ValueError:
        raise SettingsError(
            f"{PREFIX}{name} must be an integer (digits 0-9), got {raw!r}"
        ) from None
    if value < minimum:
        raise SettingsError(f"{PREFIX}{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(
            f"{PREFIX}{name} must be <= {maximum} (the most a job can ask for), got {value}"
        )
    return value


MAX_RETENTION_DAYS = 36_500  # a century: further than any date the job JSON could show


def _retention_days(env: Mapping[str, str]) -> int:
    days = _int(env, "RETENTION_DAYS", 30, 0)
    if days > MAX_RETENTION_DAYS:
        raise SettingsError(
            f"{PREFIX}RETENTION_DAYS must be <= {MAX_RETENTION_DAYS} (0 keeps jobs forever), "
            f"got {days}"
        )
    return days


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name} must be a number, got {raw!r}") from None
    if not value >= minimum or value == float("inf"):
        raise SettingsError(f"{PREFIX}{name} must be a finite number >= {minimum:g}, got {raw}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    try:
        return parse_bool(env.get(PREFIX + name), PREFIX + name, default=default)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    """A rate in Flask-Limiter's notation (``30/minute;300/hour``); ``off`` (or a word of
    :data:`~.text.FALSE_WORDS`) turns it off (``""``)."""
    raw = env.get(PREFIX + name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() in FALSE_WORDS:
        return ""
    if not RATE_LIMIT_RE.fullmatch(raw):
        raise SettingsError(
            f"{PREFIX}{name} must be rates such as 30/minute;300/hour (or off), got {raw!r}"
        )
    return raw.strip()


def _bool_or_auto(env: Mapping[str, str], name: str) -> bool | None:
    """``auto`` (or unset) -> None: the reader decides; otherwise a yes/no word."""
    if (env.get(PREFIX + name) or "").strip().lower() in ("", "auto"):
        return None
    try:
        return parse_bool(env.get(PREFIX + name), f"{PREFIX}{name} (or auto)")
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def parse_api_tokens(raw: str) -> dict[str, str]:
    """``name=token,name2=token2`` (or bare tokens) -> {token: owner id}.

    A bare token's owner id is derived from its hash, so the token itself never lands in the
    database.
    """
    return _parse_tokens(raw, "API_TOKENS", "api")


def parse_admin_tokens(raw: str) -> dict[str, str]:
    """``STYLEQUEUE_ADMIN_TOKENS``, written as the API tokens: {token: ``admin:<name>``}."""
    return _parse_tokens(raw, "ADMIN_TOKENS", "admin")


def _parse_tokens(raw: str, variable: str, kind: str) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, sep, token = item.partition("=")
        if not sep:
            token, name = name, hashlib.sha256(name.encode()).hexdigest()[:16]
        name, token = name.strip(), token.strip()
        if not token or not name:
            raise SettingsError(f"{PREFIX}{variable} has an empty name or token in {item!r}")
        if not TOKEN_NAME_RE.fullmatch(name):
            # the name becomes the owner id of that caller's jobs (a column of 80 characters)
            raise SettingsError(
                f"{PREFIX}{variable}: name {name!r} must be 1-64 letters, digits, '.', '_' or '-'"
            )
        tokens[token] = f"{kind}:{name}"
    return tokens


WEBHOOK_SECRET_PREFIX = "whsec_"


def parse_webhook_secret(raw: str | None) -> str | None:
    """``whsec_`` and the base64 of 24 to 64 random bytes (the Standard Webhooks form)."""
    raw = (raw or "").strip()
    if not raw:
        return None
    make = "`stylequeue webhook-secret`"
    if not raw.startswith(WEBHOOK_SECRET_PREFIX):
        raise SettingsError(f"{PREFIX}WEBHOOK_SECRET must start with whsec_; make one with {make}")
    try:
        key = base64.b64decode(raw[len(WEBHOOK_SECRET_PREFIX) :], validate=True)
    except ValueError:
        raise SettingsError(f"{PREFIX}WEBHOOK_SECRET: whsec_ must be followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise SettingsError(
            f"{PREFIX}WEBHOOK_SECRET must hold 24 to 64 random bytes, got {len(key)}; "
            f"make one with {make}"
        )
    return raw


def load_webhook_settings(env: Mapping[str, str]) -> WebhookSettings:
    return WebhookSettings(
        secret=parse_webhook_secret(env.get(PREFIX + "WEBHOOK_SECRET")),
        progress_seconds=_int(env, "WEBHOOK_PROGRESS_SECONDS", 5, 0),
        allow_private=_bool(env, "WEBHOOK_ALLOW_PRIVATE", False),
        allow_http=_bool(env, "WEBHOOK_ALLOW_HTTP", False),
        timeout_seconds=_float(env, "WEBHOOK_TIMEOUT_SECONDS", 10.0, 0.1),
        backoff_seconds=_float(env, "WEBHOOK_BACKOFF_SECONDS", 30.0, 0.01),
        retry_window_seconds=_int(env, "WEBHOOK_RETRY_WINDOW_SECONDS", 24 * 3600, 0),
    )


def load_engine_settings(environ: Mapping[str, str] | None = None) -> EngineSettings:
    env = os.environ if environ is None else environ
    precision = env.get(PREFIX + "PRECISION") or "auto"
    if precision not in ("auto", "float32", "mixed_bfloat16"):
        raise SettingsError(
            f"{PREFIX}PRECISION must be auto, float32 or mixed_bfloat16, got {precision!r}"
        )
    return EngineSettings(
        vgg19_weights=env.get(PREFIX + "VGG19_WEIGHTS") or "imagenet",
        precision=precision,
        xla=_bool(env, "ENGINE_XLA", False),
        deterministic=_bool_or_auto(env, "ENGINE_DETERMINISTIC"),
        worker_memory=_bytes_or_none(env, "WORKER_MEMORY"),
    )


def _bytes_or_none(env: Mapping[str, str], name: str) -> int | None:
    """``6GB``, ``512MiB`` (``shared.memory.parse_bytes``); unset or empty: None."""
    raw = (env.get(PREFIX + name) or "").strip()
    if not raw:
        return None
    try:
        return parse_bytes(raw)
    except ValueError as exc:
        raise SettingsError(f"{PREFIX}{name}: {exc}") from None


def load_client_settings(environ: Mapping[str, str] | None = None) -> ClientSettings:
    env = os.environ if environ is None else environ
    return ClientSettings(
        server=env.get(PREFIX + "SERVER") or ClientSettings.server,
        api_token=env.get(PREFIX + "API_TOKEN") or None,
        admin_token=env.get(PREFIX + "ADMIN_TOKEN") or None,
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    engine = load_engine_settings(env)
    var_dir = env.get(PREFIX + "VAR_DIR", "./var")
    default_db = "sqlite:///" + str(Path(var_dir, "stylequeue.db"))
    limits = Limits(
        max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", Limits.max_upload_bytes, 1024),
        max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", Limits.max_image_pixels, 64),
        # capped by the parameter table's intrinsic bounds: a limit above them would be
        # advertised and then refused by validation
        max_size=_int(env, "MAX_SIZE", Limits.max_size, 16, bounds.MAX_SIZE),
        max_iterations=_int(env, "MAX_ITERATIONS", Limits.max_iterations, 1, bounds.MAX_ITERATIONS),
        max_styles=_int(env, "MAX_STYLES", Limits.max_styles, 1, bounds.MAX_STYLES),
        max_active_jobs=_int(env, "MAX_ACTIVE_JOBS", Limits.max_active_jobs, 1),
    )
    soft = _int(env, "JOB_SOFT_TIME_LIMIT", 3600, 1)
    hard = _int(env, "JOB_TIME_LIMIT", soft + 60, 2)
    if hard <= soft:
        raise SettingsError(
            f"{PREFIX}JOB_TIME_LIMIT ({hard}) must exceed {PREFIX}JOB_SOFT_TIME_LIMIT ({soft})"
        )
    api_tokens = parse_api_tokens(env.get(PREFIX + "API_TOKENS", ""))
    admin_tokens = parse_admin_tokens(env.get(PREFIX + "ADMIN_TOKENS", ""))
    if set(api_tokens) & set(admin_tokens):
        # one secret, two powers: a leaked job-submitting script would also be an operator
        raise SettingsError(
            f"{PREFIX}ADMIN_TOKENS and {PREFIX}API_TOKENS share a token; give operators their own"
        )
    return Settings(
        database_url=env.get(PREFIX + "DATABASE_URL") or default_db,
        redis_url=env.get(PREFIX + "REDIS_URL") or "redis://127.0.0.1:6379/0",
        storage_url=env.get(PREFIX + "STORAGE_URL") or "file://" + str(Path(var_dir, "objects")),
        s3_endpoint_url=env.get(PREFIX + "S3_ENDPOINT_URL") or None,
        vgg19_weights=engine.vgg19_weights,
        secret_key=env.get(PREFIX + "SECRET_KEY") or "",
        api_tokens=api_tokens,
        admin_tokens=admin_tokens,
        limits=limits,
        progress_maxlen=_int(env, "PROGRESS_MAXLEN", 20_000, 100),
        progress_ttl_seconds=_int(env, "PROGRESS_TTL_SECONDS", 3 * 24 * 3600, 1),
        job_soft_time_limit=soft,
        job_time_limit=hard,
        lock_ttl_seconds=_int(env, "LOCK_TTL_SECONDS", 60, 2),
        queued_grace_seconds=_int(env, "QUEUED_GRACE_SECONDS", 60, 0),
        checkpoint_seconds=_int(env, "CHECKPOINT_SECONDS", 30, 0),
        shutdown_grace_seconds=_int(env, "SHUTDOWN_GRACE_SECONDS", 10, 1),
        owner_slots=_int(env, "OWNER_SLOTS", OWNER_SLOTS, 1),
        retention_days=_retention_days(env),
        var_dir=var_dir,
        precision=engine.precision,
        engine_xla=engine.xla,
        engine_deterministic=engine.deterministic,
        worker_memory=engine.worker_memory,
        cookie_secure=_bool(env, "COOKIE_SECURE", False),
        metrics_token=(env.get(PREFIX + "METRICS_TOKEN") or "").strip() or None,
        webhooks=load_webhook_settings(env),
        anonymous=_bool(env, "ANONYMOUS", True),
        anonymous_max_active_jobs=_int(
            env, "ANONYMOUS_MAX_ACTIVE_JOBS", Settings.anonymous_max_active_jobs, 1
        ),
        max_active_jobs_per_address=_int(
            env, "MAX_ACTIVE_JOBS_PER_ADDRESS", Settings.max_active_jobs_per_address, 1
        ),
        storage_quota_bytes=_int(env, "STORAGE_QUOTA_BYTES", Settings.storage_quota_bytes, 0),
        submit_rate_limit=_rate(env, "SUBMIT_RATE_LIMIT", Settings.submit_rate_limit),
        auth_failure_rate_limit=_rate(
            env, "AUTH_FAILURE_RATE_LIMIT", Settings.auth_failure_rate_limit
        ),
        trusted_proxies=_int(env, "TRUSTED_PROXIES", 0, 0, 5),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return load_settings()
