"""Every Redis key name is spelled in shared/redis_keys.py and nowhere else in the code."""

from __future__ import annotations

import re
from pathlib import Path

from stylequeue.shared import redis_keys

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "web", "worker", "cli")
SPELLED = re.compile(r"""["']stylequeue:\w""")  # not "stylequeue: a docstring"


def test_no_module_but_redis_keys_spells_a_redis_key() -> None:
    home = ROOT / "shared" / "redis_keys.py"
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != home
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if SPELLED.search(line)
    ]
    assert offenders == [], "Redis key names belong in shared/redis_keys.py"
    for spelled in ('f"stylequeue:progress:{job_id}"', "PREFIX = 'stylequeue:worker:'"):
        assert SPELLED.search(spelled)  # the check sees what it looks for


def test_key_names_are_namespaced_and_distinct() -> None:
    job = "8d4c2a9e-0000-4000-8000-000000000001"
    names = [
        redis_keys.stream_key(job),
        redis_keys.tiles_key(job),
        redis_keys.cancel_key(job),
        redis_keys.lock_key(job),
        redis_keys.SWEEP_LOCK_KEY,
        redis_keys.worker_key("w1@host"),
        redis_keys.top_up_lock_key("web:alice"),
    ]
    assert all(name.startswith("stylequeue:") for name in names)
    assert len(set(names)) == len(names)
    assert redis_keys.worker_key("w1@host").startswith(redis_keys.WORKER_PATTERN[:-1])
    assert redis_keys.stream_key(job) == f"stylequeue:progress:{job}"  # names in use stay
