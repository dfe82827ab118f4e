"""Browser tests: the real app on a free port, a real Celery worker, Debian's Chromium.

One stack per session (starting a worker means importing TensorFlow and building VGG19,
which is slow on a small machine): a private redis-server (other workers on a shared Redis
would take our ``style`` messages), a migrated SQLite file, a local object folder, the app
served by werkzeug in a thread, and one ``celery worker`` subprocess with random weights.
Each test gets a fresh browser context, so a new owner (session cookie) and no jobs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from stylequeue.shared.settings import Settings, load_settings
from tests import services
from tests.conftest import TEST_LIMITS
from tests.services import served
from tests.worker_process import WorkerProcess

CHROMIUM = os.environ.get("STYLEQUEUE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
DATA = Path(__file__).parent / "data"
# Long enough for the cancel test to catch a job mid-run on any machine.
E2E_LIMITS = replace(TEST_LIMITS, max_iterations=5000, max_active_jobs=20)


@dataclass(frozen=True)
class Stack:
    settings: Settings
    url: str  # base URL of the live server, no trailing slash
    worker: WorkerProcess


@pytest.fixture(scope="session")
def e2e_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with services.private_redis(tmp_path_factory.mktemp("e2e-redis")) as (url, _proc):
        yield url


@pytest.fixture(scope="session")
def e2e_settings(tmp_path_factory: pytest.TempPathFactory, e2e_redis: str) -> Settings:
    from stylequeue.shared.migrate import upgrade

    var_dir = tmp_path_factory.mktemp("e2e-var")
    database_url = f"sqlite:///{var_dir / 'stylequeue.db'}"
    upgrade(database_url)
    base = load_settings({
        "STYLEQUEUE_VAR_DIR": str(var_dir),
        "STYLEQUEUE_VGG19_WEIGHTS": "random",
        "STYLEQUEUE_SECRET_KEY": "e2e-secret",
        "STYLEQUEUE_QUEUED_GRACE_SECONDS": "5",
    })  # fmt: skip
    # Every browser context comes from 127.0.0.1: the per-address bounds of a public
    # deployment (web/limits.py, shared/quota.py) would count the whole session's jobs as
    # one visitor's. The CSP test (test_csp.py) runs under the real headers all the same.
    return replace(
        base,
        database_url=database_url,
        redis_url=e2e_redis,
        limits=E2E_LIMITS,
        submit_rate_limit="10000/minute",
        anonymous_max_active_jobs=10_000,
        max_active_jobs_per_address=10_000,
    )


@pytest.fixture(scope="session")
def live_server(e2e_settings: Settings) -> Iterator[str]:
    """``stylequeue.web.create_app(settings)`` served by werkzeug on a free port, in a thread."""
    with served(e2e_settings, "e2e-live-server") as url:
        yield url


@pytest.fixture(scope="session")
def e2e_worker(
    e2e_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(e2e_settings, tmp_path_factory.mktemp("e2e-worker-logs"), name="e2e")
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="session")
def stack(e2e_settings: Settings, live_server: str, e2e_worker: WorkerProcess) -> Stack:
    return Stack(e2e_settings, live_server, e2e_worker)


# ---- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def new_context(browser, stack: Stack, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Open browser contexts (each its own cookies = its own owner); closed after the test.

    Every request the pages make must stay on the app (no CDN, no remote asset), and their
    scripts must throw no uncaught error.
    """
    contexts = []
    offsite: list[str] = []
    js_errors: list[object] = []

    def make(**kwargs):  # type: ignore[no-untyped-def]
        options = {"viewport": {"width": 1280, "height": 900}, "base_url": stack.url,
                   "accept_downloads": True}  # fmt: skip
        options.update(kwargs)
        context = browser.new_context(**options)
        context.set_default_timeout(20_000)

        def on_request(req) -> None:  # type: ignore[no-untyped-def]
            url = req.url
            if not url.startswith((stack.url, "data:", "blob:")):
                offsite.append(url)

        context.on("request", on_request)
        context.on("page", lambda page: page.on("pageerror", lambda exc: js_errors.append(exc)))
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
    assert not offsite, f"pages requested assets off the app: {offsite}"
    assert not js_errors, f"uncaught errors in the pages' scripts: {js_errors}"
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(stack.worker.log_tail())


@pytest.fixture
def page(new_context):  # type: ignore[no-untyped-def]
    return new_context().new_page()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def screenshots() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def content_png(tmp_path: Path) -> Path:
    path = tmp_path / "chelsea.png"
    shutil.copy(DATA / "chelsea.png", path)
    return path
