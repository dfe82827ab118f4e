"""The arrows point one way: ``web -> shared``, ``worker -> shared``, ``hooks -> web,
shared``, nothing back; the engine depends on nothing but its parameters.

Each check imports a layer's every module in a fresh interpreter and looks at what came in
with them (``sys.modules``), so an import hidden in a function body that runs at import
time, or a transitive one, is caught as well as a top-level one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules(folder: str) -> list[str]:
    out = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").parts
        out.append(".".join(("stylequeue", *(rel[:-1] if rel[-1] == "__init__" else rel))))
    return out


def _loaded_after_importing(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _under(loaded: set[str], *roots: str) -> list[str]:
    return sorted(m for m in loaded if any(m == r or m.startswith(r + ".") for r in roots))


def test_shared_imports_neither_web_nor_worker_nor_cli() -> None:
    loaded = _loaded_after_importing(_modules("shared"))
    assert (
        _under(loaded, "stylequeue.web", "stylequeue.worker", "stylequeue.hooks", "stylequeue.cli")
        == []
    )
    assert _under(loaded, "flask", "tensorflow", "keras") == []


def test_web_never_imports_the_worker_or_tensorflow() -> None:
    loaded = _loaded_after_importing(_modules("web"))
    assert _under(loaded, "stylequeue.worker", "stylequeue.hooks", "stylequeue.cli") == []
    assert _under(loaded, "tensorflow", "keras") == []


@pytest.mark.parametrize("module", ["stylequeue.worker.runner", "stylequeue.worker.app"])
def test_the_worker_never_imports_the_web(module: str) -> None:
    loaded = _loaded_after_importing([module])
    assert _under(loaded, "stylequeue.web", "stylequeue.hooks", "stylequeue.cli", "flask") == []


def test_the_webhooks_worker_never_imports_the_worker_or_tensorflow() -> None:
    """The light worker runs from the web image: the job JSON's web, shared, no engine."""
    loaded = _loaded_after_importing(_modules("hooks"))
    assert "stylequeue.hooks.tasks" in loaded and "stylequeue.web.job_json" in loaded
    assert _under(loaded, "stylequeue.worker", "stylequeue.cli") == []
    assert _under(loaded, "tensorflow", "keras") == []


def test_the_engine_depends_on_nothing_but_its_parameters() -> None:
    """No settings, Redis, Celery, Flask, database or storage inside the engine: the worker
    and the CLI read those and pass the engine plain values."""
    loaded = _loaded_after_importing(_modules("worker/engine"))
    assert _under(loaded, "stylequeue.web", "stylequeue.cli") == []
    outside = [
        m
        for m in _under(loaded, "stylequeue.worker")
        if m != "stylequeue.worker" and not m.startswith("stylequeue.worker.engine")
    ]
    assert outside == []
    # the parameters, and the pure rules they are made of (bounds, decoding an image, yes/no),
    # and the memory model (pure arithmetic on the parameters, shared with the web)
    assert _under(loaded, "stylequeue.shared") == [
        "stylequeue.shared",
        "stylequeue.shared.bounds",
        "stylequeue.shared.images",
        "stylequeue.shared.memory",
        "stylequeue.shared.params",
        "stylequeue.shared.text",
    ]
    assert _under(loaded, "redis", "celery", "flask", "sqlalchemy", "boto3") == []
