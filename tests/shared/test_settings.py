"""Settings from an environment mapping: defaults, overrides, and clear errors."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stylequeue.shared.params import MAX_ITERATIONS, MAX_SIZE, MAX_STYLES, TransferParams
from stylequeue.shared.settings import (
    ENV_VARS,
    ClientSettings,
    EngineSettings,
    Limits,
    SettingsError,
    get_settings,
    load_client_settings,
    load_engine_settings,
    load_settings,
    parse_api_tokens,
)

REPO = Path(__file__).resolve().parents[2]


def test_defaults(tmp_path: Path) -> None:
    var = tmp_path / "var"
    s = load_settings({"STYLEQUEUE_VAR_DIR": str(var)})
    assert s.var_dir == str(var)
    assert s.database_url == f"sqlite:///{var / 'stylequeue.db'}"
    assert s.storage_url == f"file://{var / 'objects'}"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.s3_endpoint_url is None
    assert s.vgg19_weights == "imagenet"
    assert s.precision == "auto"
    assert s.secret_key == ""
    assert dict(s.api_tokens) == {}
    assert s.limits == Limits()
    assert (s.job_soft_time_limit, s.job_time_limit) == (3600, 3660)
    assert s.progress_maxlen == 20_000
    assert s.progress_ttl_seconds == 3 * 24 * 3600
    assert (s.lock_ttl_seconds, s.queued_grace_seconds) == (60, 60)
    assert s.owner_slots == 1
    assert s.cookie_secure is False


def test_defaults_with_nothing_set_use_a_relative_var_dir() -> None:
    s = load_settings({})
    assert s.var_dir == "./var"
    assert s.database_url == "sqlite:///var/stylequeue.db"  # relative to the working folder
    assert s.storage_url == "file://var/objects"


def test_empty_values_mean_default() -> None:
    env = {
        f"STYLEQUEUE_{name}": ""
        for name in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL", "S3_ENDPOINT_URL",
                     "VGG19_WEIGHTS", "PRECISION", "MAX_SIZE", "JOB_TIME_LIMIT", "API_TOKENS")
    }  # fmt: skip
    s = load_settings(env)
    assert s == load_settings({})


def test_overrides() -> None:
    s = load_settings({
        "STYLEQUEUE_VAR_DIR": "/srv/sq",
        "STYLEQUEUE_DATABASE_URL": "postgresql+psycopg://u@db/sq",
        "STYLEQUEUE_REDIS_URL": "redis://cache:6380/2",
        "STYLEQUEUE_STORAGE_URL": "s3://bucket/prefix",
        "STYLEQUEUE_S3_ENDPOINT_URL": "http://minio:9000",
        "STYLEQUEUE_VGG19_WEIGHTS": "random",
        "STYLEQUEUE_SECRET_KEY": "s3cret",
        "STYLEQUEUE_PRECISION": "mixed_bfloat16",
        "STYLEQUEUE_MAX_UPLOAD_BYTES": "4096",
        "STYLEQUEUE_MAX_IMAGE_PIXELS": "1000",
        "STYLEQUEUE_MAX_SIZE": "512",
        "STYLEQUEUE_MAX_ITERATIONS": "50",
        "STYLEQUEUE_MAX_STYLES": "2",
        "STYLEQUEUE_MAX_ACTIVE_JOBS": "3",
        "STYLEQUEUE_PROGRESS_MAXLEN": "100",
        "STYLEQUEUE_PROGRESS_TTL_SECONDS": "60",
        "STYLEQUEUE_JOB_SOFT_TIME_LIMIT": "100",
        "STYLEQUEUE_JOB_TIME_LIMIT": "130",
        "STYLEQUEUE_LOCK_TTL_SECONDS": "5",
        "STYLEQUEUE_QUEUED_GRACE_SECONDS": "0",
        "STYLEQUEUE_OWNER_SLOTS": "3",
        "STYLEQUEUE_COOKIE_SECURE": "true",
    })  # fmt: skip
    assert s.var_dir == "/srv/sq"
    assert s.database_url == "postgresql+psycopg://u@db/sq"
    assert s.redis_url == "redis://cache:6380/2"
    assert s.storage_url == "s3://bucket/prefix"
    assert s.s3_endpoint_url == "http://minio:9000"
    assert s.vgg19_weights == "random"
    assert s.secret_key == "s3cret"
    assert s.precision == "mixed_bfloat16"
    assert s.limits == Limits(4096, 1000, 512, 50, 2, 3)
    assert (s.progress_maxlen, s.progress_ttl_seconds) == (100, 60)
    assert (s.job_soft_time_limit, s.job_time_limit) == (100, 130)
    assert (s.lock_ttl_seconds, s.queued_grace_seconds) == (5, 0)
    assert s.owner_slots == 3
    assert s.cookie_secure is True


def test_var_dir_moves_the_defaults() -> None:
    s = load_settings({"STYLEQUEUE_VAR_DIR": "/data/sq"})
    assert s.database_url == "sqlite:////data/sq/stylequeue.db"
    assert s.storage_url == "file:///data/sq/objects"


def test_hard_limit_defaults_to_a_minute_above_the_soft_one() -> None:
    s = load_settings({"STYLEQUEUE_JOB_SOFT_TIME_LIMIT": "7200"})
    assert (s.job_soft_time_limit, s.job_time_limit) == (7200, 7260)


@pytest.mark.parametrize(
    "name",
    ["MAX_UPLOAD_BYTES", "MAX_IMAGE_PIXELS", "MAX_SIZE", "MAX_ITERATIONS", "MAX_STYLES",
     "MAX_ACTIVE_JOBS", "PROGRESS_MAXLEN", "PROGRESS_TTL_SECONDS", "JOB_SOFT_TIME_LIMIT",
     "JOB_TIME_LIMIT", "LOCK_TTL_SECONDS", "QUEUED_GRACE_SECONDS"],
)  # fmt: skip
@pytest.mark.parametrize("raw", ["ten", "1.5", "1e3", "0x10"])
def test_bad_integers_name_the_variable(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=f"STYLEQUEUE_{name} must be an integer") as info:
        load_settings({f"STYLEQUEUE_{name}": raw})
    assert repr(raw) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("name", "minimum"),
    [("MAX_UPLOAD_BYTES", 1024), ("MAX_IMAGE_PIXELS", 64), ("MAX_SIZE", 16),
     ("MAX_ITERATIONS", 1), ("MAX_STYLES", 1), ("MAX_ACTIVE_JOBS", 1), ("PROGRESS_MAXLEN", 100),
     ("PROGRESS_TTL_SECONDS", 1), ("JOB_SOFT_TIME_LIMIT", 1), ("LOCK_TTL_SECONDS", 2),
     ("QUEUED_GRACE_SECONDS", 0)],
)  # fmt: skip
def test_values_below_the_minimum_name_the_variable(name: str, minimum: int) -> None:
    with pytest.raises(SettingsError, match=f"STYLEQUEUE_{name} must be >= {minimum}"):
        load_settings({f"STYLEQUEUE_{name}": str(minimum - 1)})
    load_settings({f"STYLEQUEUE_{name}": str(minimum)})  # the minimum itself is fine


@pytest.mark.parametrize(
    ("name", "maximum"),
    [("MAX_SIZE", MAX_SIZE), ("MAX_ITERATIONS", MAX_ITERATIONS), ("MAX_STYLES", MAX_STYLES)],
)
def test_limits_above_what_a_job_can_ask_for_name_the_variable(name: str, maximum: int) -> None:
    """A limit above the parameter table's intrinsic bound would be advertised by /config and
    then refused by validation: refused here instead, naming the variable and the bound."""
    with pytest.raises(SettingsError, match=f"STYLEQUEUE_{name} must be <= {maximum}"):
        load_settings({f"STYLEQUEUE_{name}": str(maximum + 1)})
    limits = load_settings({f"STYLEQUEUE_{name}": str(maximum)}).limits  # the bound is fine
    assert getattr(limits, name.lower()) == maximum


def test_the_largest_limits_are_what_validation_takes() -> None:
    limits = load_settings(
        {"STYLEQUEUE_MAX_STYLES": str(MAX_STYLES), "STYLEQUEUE_MAX_SIZE": str(MAX_SIZE),
         "STYLEQUEUE_MAX_ITERATIONS": str(MAX_ITERATIONS)}
    ).limits  # fmt: skip
    params = TransferParams.from_inputs(
        {"iterations": str(MAX_ITERATIONS), "max_size": str(MAX_SIZE)},
        limits=limits,
        n_styles=limits.max_styles,
    )
    assert (params.iterations, params.max_size) == (MAX_ITERATIONS, MAX_SIZE)


def test_job_time_limit_below_its_minimum() -> None:
    with pytest.raises(SettingsError, match="STYLEQUEUE_JOB_TIME_LIMIT must be >= 2"):
        load_settings({"STYLEQUEUE_JOB_SOFT_TIME_LIMIT": "1", "STYLEQUEUE_JOB_TIME_LIMIT": "1"})
    s = load_settings({"STYLEQUEUE_JOB_SOFT_TIME_LIMIT": "1", "STYLEQUEUE_JOB_TIME_LIMIT": "2"})
    assert (s.job_soft_time_limit, s.job_time_limit) == (1, 2)


@pytest.mark.parametrize("hard", ["3600", "3000"])
def test_hard_limit_must_exceed_the_soft_one(hard: str) -> None:
    with pytest.raises(SettingsError, match="STYLEQUEUE_JOB_TIME_LIMIT") as info:
        load_settings({"STYLEQUEUE_JOB_SOFT_TIME_LIMIT": "3600", "STYLEQUEUE_JOB_TIME_LIMIT": hard})
    message = str(info.value)
    assert "STYLEQUEUE_JOB_SOFT_TIME_LIMIT (3600)" in message
    assert f"STYLEQUEUE_JOB_TIME_LIMIT ({hard})" in message


def test_hard_limit_alone_below_the_default_soft_one() -> None:
    with pytest.raises(SettingsError, match="must exceed"):
        load_settings({"STYLEQUEUE_JOB_TIME_LIMIT": "600"})


@pytest.mark.parametrize("value", ["auto", "float32", "mixed_bfloat16"])
def test_precision_choices(value: str) -> None:
    assert load_settings({"STYLEQUEUE_PRECISION": value}).precision == value


@pytest.mark.parametrize("value", ["fp16", "FLOAT32", "mixed_float16", " auto"])
def test_bad_precision_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="STYLEQUEUE_PRECISION") as info:
        load_settings({"STYLEQUEUE_PRECISION": value})
    assert repr(value) in str(info.value)


# ---- API tokens ------------------------------------------------------------------------------


def test_named_tokens() -> None:
    assert parse_api_tokens("alice=tok-a, bob = tok-b ") == {
        "tok-a": "api:alice",
        "tok-b": "api:bob",
    }


def test_a_token_may_contain_equals_signs() -> None:
    assert parse_api_tokens("ci=abc==") == {"abc==": "api:ci"}


def test_bare_token_gets_a_hashed_owner_id() -> None:
    token = "b4re-t0ken-with-some-length"
    tokens = parse_api_tokens(token)
    owner = tokens[token]
    expected = hashlib.sha256(token.encode()).hexdigest()[:16]
    assert owner == f"api:{expected}"
    assert len(owner) == len("api:") + 16
    assert all(c in "0123456789abcdef" for c in owner[4:])
    assert token not in owner
    assert not any(token[i : i + 6] in owner for i in range(len(token) - 5))
    assert parse_api_tokens(token) == tokens  # stable across restarts
    assert parse_api_tokens("other-token")["other-token"] != owner


def test_mixed_and_empty_parts() -> None:
    tokens = parse_api_tokens(",alice=tok-a,, ,bare-token,")
    assert set(tokens) == {"tok-a", "bare-token"}
    assert tokens["tok-a"] == "api:alice"
    assert tokens["bare-token"].startswith("api:")
    assert parse_api_tokens("") == {}
    assert parse_api_tokens(" , ,") == {}


@pytest.mark.parametrize("raw", ["=token", "alice=", " = ", "ok=t1,=t2"])
def test_empty_name_or_token_is_an_error(raw: str) -> None:
    with pytest.raises(SettingsError, match="STYLEQUEUE_API_TOKENS"):
        parse_api_tokens(raw)


@pytest.mark.parametrize("name", ["x" * 65, "two words", "ünïcode", "a/b"])
def test_token_names_fit_an_owner_id(name: str) -> None:
    with pytest.raises(SettingsError, match="1-64 letters"):
        parse_api_tokens(f"{name}=secret-token")
    assert parse_api_tokens(f"{'x' * 64}=t") == {"t": "api:" + "x" * 64}


def test_load_settings_parses_tokens() -> None:
    s = load_settings({"STYLEQUEUE_API_TOKENS": "alice=alice-token"})
    assert dict(s.api_tokens) == {"alice-token": "api:alice"}
    with pytest.raises(SettingsError, match="STYLEQUEUE_API_TOKENS"):
        load_settings({"STYLEQUEUE_API_TOKENS": "=alice-token"})


# ---- cookies, caching ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "Yes", "on", " on "])
def test_cookie_secure_on(raw: str) -> None:
    assert load_settings({"STYLEQUEUE_COOKIE_SECURE": raw}).cookie_secure is True


@pytest.mark.parametrize("raw", ["", "0", "false", "no", "off", "OFF"])
def test_cookie_secure_off(raw: str) -> None:
    assert load_settings({"STYLEQUEUE_COOKIE_SECURE": raw}).cookie_secure is False


@pytest.mark.parametrize("raw", ["nope", "2", "secure"])
def test_cookie_secure_typo_is_an_error_not_off(raw: str) -> None:
    # A typo must not silently send the session cookie over plain HTTP.
    with pytest.raises(SettingsError, match=r"^STYLEQUEUE_COOKIE_SECURE must be one of") as info:
        load_settings({"STYLEQUEUE_COOKIE_SECURE": raw})
    assert repr(raw) in str(info.value)


# ---- the engine's knobs and the client's ---------------------------------------------------


def test_engine_defaults() -> None:
    assert load_engine_settings({}) == EngineSettings("imagenet", "auto", False, None)
    s = load_settings({})
    assert (s.engine_xla, s.engine_deterministic) == (False, None)
    assert s.engine == EngineSettings()


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("on", True), ("YES", True),
                                            ("off", False), ("0", False), ("", False)])  # fmt: skip
def test_engine_xla(raw: str, value: bool) -> None:
    assert load_engine_settings({"STYLEQUEUE_ENGINE_XLA": raw}).xla is value
    assert load_settings({"STYLEQUEUE_ENGINE_XLA": raw}).engine_xla is value


@pytest.mark.parametrize(("raw", "value"), [("auto", None), ("AUTO", None), ("", None),
                                            ("on", True), ("1", True), ("no", False),
                                            ("off", False)])  # fmt: skip
def test_engine_deterministic(raw: str, value: bool | None) -> None:
    env = {"STYLEQUEUE_ENGINE_DETERMINISTIC": raw}
    assert load_engine_settings(env).deterministic is value
    assert load_settings(env).engine.deterministic is value


@pytest.mark.parametrize("name", ["ENGINE_XLA", "ENGINE_DETERMINISTIC"])
def test_engine_switch_typo_names_the_variable(name: str) -> None:
    with pytest.raises(SettingsError, match=f"^STYLEQUEUE_{name}"):
        load_engine_settings({f"STYLEQUEUE_{name}": "sometimes"})


def test_engine_settings_carry_weights_and_precision() -> None:
    env = {"STYLEQUEUE_VGG19_WEIGHTS": "random", "STYLEQUEUE_PRECISION": "float32"}
    assert load_engine_settings(env) == EngineSettings("random", "float32")
    assert load_settings(env).engine == EngineSettings("random", "float32")


@pytest.mark.parametrize(
    ("raw", "value"), [("6GB", 6 * 10**9), ("512MiB", 512 * 2**20), (" 2g ", 2 * 10**9), ("", None)]
)
def test_worker_memory(raw: str, value: int | None) -> None:
    env = {"STYLEQUEUE_WORKER_MEMORY": raw}
    assert load_engine_settings(env).worker_memory == value
    assert load_settings(env).engine.worker_memory == value
    assert load_settings({}).worker_memory is None


@pytest.mark.parametrize("raw", ["lots", "0", "6 parsecs"])
def test_worker_memory_that_is_not_a_size_names_the_variable(raw: str) -> None:
    wanted = r"^STYLEQUEUE_WORKER_MEMORY: (expected a size|a memory budget must be above 0)"
    with pytest.raises(SettingsError, match=wanted):
        load_engine_settings({"STYLEQUEUE_WORKER_MEMORY": raw})


def test_client_settings() -> None:
    assert load_client_settings({}) == ClientSettings("http://127.0.0.1:8000", None)
    env = {"STYLEQUEUE_SERVER": "https://styles.example.org", "STYLEQUEUE_API_TOKEN": "t0k"}
    assert load_client_settings(env) == ClientSettings("https://styles.example.org", "t0k")
    assert load_client_settings({"STYLEQUEUE_API_TOKEN": ""}).api_token is None


# ---- every STYLEQUEUE_* variable: read here, documented in the README ------------------------


class _Recording(dict[str, str]):
    """An environment that remembers which names were looked up."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def test_env_vars_is_exactly_what_the_loaders_read() -> None:
    env = _Recording()
    load_settings(env)
    load_engine_settings(env)
    load_client_settings(env)
    assert env.asked == set(ENV_VARS)
    assert len(ENV_VARS) == len(set(ENV_VARS))


# Where product code, deployment files and docs for operators live (tests and CI have their
# own STYLEQUEUE_TEST_* switches, documented under "Developing").
CODE = ["shared", "web", "worker", "cli", "migrations", "docker", "bench",
        "docker-compose.yml", ".env.example", "alembic.ini", "Makefile"]  # fmt: skip
# Names that look like variables but are not read from the environment.
NOT_VARIABLES = {"STYLEQUEUE_SETTINGS": "the Flask config key of the app's Settings object"}
NAME = re.compile(r"STYLEQUEUE_[A-Z0-9_]*[A-Z0-9]\b(?!_)")


def _files() -> Iterator[Path]:
    for entry in CODE:
        path = REPO / entry
        if path.is_file():
            yield path
        else:
            for found in sorted(path.rglob("*")):
                if found.is_file() and found.suffix not in {".png", ".jpg", ".pyc", ".h5"}:
                    yield found


def _named_in_code() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for path in _files():
        for name in NAME.findall(path.read_text(errors="replace")):
            names.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return names


def _readme_table() -> set[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `STYLEQUEUE_")]
    return {
        name
        for row in rows
        for name in re.findall(r"`(STYLEQUEUE_[A-Z0-9_]+)`", row.split(" | ")[0])
    }


def test_every_variable_named_in_code_is_a_setting() -> None:
    names = _named_in_code()
    assert "STYLEQUEUE_ENGINE_XLA" in names  # the scan finds what it should
    unknown = {n: sorted(where) for n, where in names.items() if n not in set(ENV_VARS)}
    test_switches = {n for n in unknown if n.startswith("STYLEQUEUE_TEST_")}  # make test's own
    assert {n: w for n, w in unknown.items() if n not in {*NOT_VARIABLES, *test_switches}} == {}


def test_the_readme_table_lists_every_setting() -> None:
    table = _readme_table()
    assert "STYLEQUEUE_DATABASE_URL" in table  # the parse finds what it should
    assert sorted(set(ENV_VARS) - table) == [], "missing from README's configuration table"
    assert sorted(table - set(ENV_VARS)) == [], "in README's table but read by nobody"


def test_nothing_else_reads_the_environment_for_our_variables() -> None:
    """Only shared/settings.py touches os.environ / os.getenv for STYLEQUEUE_* names (the
    names themselves may appear elsewhere, in messages and docs)."""
    reads = re.compile(
        r"(os\.environ|getenv|envvar)[^\n]*(STYLEQUEUE_|[A-Z]+_ENV\b)"
        r"|STYLEQUEUE_[^\n]*os\.environ"
    )
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for path in _files()
        if path.suffix == ".py" and path.name != "settings.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if reads.search(line)
    ]
    assert offenders == []


def test_other_prefixes_are_ignored() -> None:
    s = load_settings({"REDIS_URL": "redis://elsewhere", "stylequeue_redis_url": "redis://x"})
    assert s.redis_url == "redis://127.0.0.1:6379/0"


def test_get_settings_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        monkeypatch.setenv("STYLEQUEUE_REDIS_URL", "redis://first:6379/0")
        first = get_settings()
        monkeypatch.setenv("STYLEQUEUE_REDIS_URL", "redis://second:6379/0")
        assert get_settings() is first
        assert first.redis_url == "redis://first:6379/0"
    finally:
        get_settings.cache_clear()


def test_settings_are_frozen() -> None:
    s = load_settings({})
    with pytest.raises(AttributeError):
        s.redis_url = "redis://other"  # type: ignore[misc]


# ---- a public deployment's bounds -------------------------------------------------------------


def test_public_bounds_defaults_and_values() -> None:
    default = load_settings({})
    assert default.anonymous is True and default.trusted_proxies == 0
    assert default.submit_rate_limit and default.auth_failure_rate_limit
    assert default.storage_quota_bytes > 0
    set_ = load_settings({
        "STYLEQUEUE_ANONYMOUS": "off", "STYLEQUEUE_TRUSTED_PROXIES": "1",
        "STYLEQUEUE_SUBMIT_RATE_LIMIT": "5/minute;50 per hour",
        "STYLEQUEUE_AUTH_FAILURE_RATE_LIMIT": "off", "STYLEQUEUE_STORAGE_QUOTA_BYTES": "0",
        "STYLEQUEUE_ANONYMOUS_MAX_ACTIVE_JOBS": "7", "STYLEQUEUE_MAX_ACTIVE_JOBS_PER_ADDRESS": "2",
    })  # fmt: skip
    assert (set_.anonymous, set_.trusted_proxies, set_.storage_quota_bytes) == (False, 1, 0)
    assert set_.submit_rate_limit == "5/minute;50 per hour"
    assert set_.auth_failure_rate_limit == ""  # off
    assert (set_.anonymous_max_active_jobs, set_.max_active_jobs_per_address) == (7, 2)


@pytest.mark.parametrize(
    ("name", "value"),
    [("SUBMIT_RATE_LIMIT", "lots"), ("AUTH_FAILURE_RATE_LIMIT", "5/fortnight"),
     ("TRUSTED_PROXIES", "9"), ("ANONYMOUS_MAX_ACTIVE_JOBS", "0"), ("ANONYMOUS", "maybe")],
)  # fmt: skip
def test_bad_public_bounds_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"STYLEQUEUE_{name}"):
        load_settings({f"STYLEQUEUE_{name}": value})
