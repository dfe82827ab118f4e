"""The web in a fresh process: no TensorFlow imported, and gunicorn's target works.

Subprocesses, so modules other tests imported cannot hide an import the web makes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

from stylequeue.shared.settings import Settings
from tests.services import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import io, sys
    from PIL import Image

    from stylequeue.web import create_app

    def png():
        out = io.BytesIO()
        Image.new("RGB", (32, 32), "red").save(out, "PNG")
        return out.getvalue()

    client = create_app().test_client()
    auth = {"Authorization": "Bearer alice-token"}
    made = client.post("/api/v1/jobs", headers=auth, data={
        "content": (io.BytesIO(png()), "c.png"), "style": (io.BytesIO(png()), "s.png"),
        "iterations": "3", "max_size": "32",
    })
    assert made.status_code == 201, made.get_json()
    job = made.get_json()
    for url in [job["links"]["self"], job["links"]["progress"], job["links"]["snapshots"],
                job["links"]["content"], "/api/v1/jobs", "/api/v1/config", "/api/v1/fleet",
                "/api/v1/session", "/readyz", "/"]:
        assert client.get(url, headers=auth).status_code == 200, url
    assert client.post(job["links"]["cancel"], headers=auth).status_code == 202
    heavy = sorted(
        m for m in ("tensorflow", "keras", "torch", "stylequeue.worker", "stylequeue.cli")
        if m in sys.modules
    )
    print("HEAVY=" + ",".join(heavy))
    """
)


def service_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLEQUEUE_")}
    env.update(
        STYLEQUEUE_DATABASE_URL=settings.database_url,
        STYLEQUEUE_REDIS_URL=settings.redis_url,
        STYLEQUEUE_STORAGE_URL=settings.storage_url,
        STYLEQUEUE_VAR_DIR=settings.var_dir,
        STYLEQUEUE_SECRET_KEY="process-test",
        STYLEQUEUE_API_TOKENS="alice=alice-token",
        PYTHONPATH=str(ROOT),
    )
    return env


def test_web_never_imports_tensorflow(settings: Settings) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=service_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY=\n" in result.stdout, result.stdout


def test_gunicorn_serves_the_factory(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "stylequeue.web:create_app()"],
        env=service_env(settings), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: urllib.request.urlopen(base + "/healthz", timeout=1).status == 200,
                 timeout=30, what="gunicorn")  # fmt: skip
        with urllib.request.urlopen(base + "/readyz", timeout=5) as response:
            assert json.load(response)["status"] == "ok"
        with urllib.request.urlopen(base + "/api/v1/config", timeout=5) as response:
            assert response.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
