"""Where a job's objects live in storage. One place, so web and worker agree."""

from __future__ import annotations


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def content_key(job_id: str) -> str:
    return f"jobs/{job_id}/inputs/content.png"


def style_key(job_id: str, index: int) -> str:
    return f"jobs/{job_id}/inputs/style-{index}.png"


def snapshot_key(job_id: str, iteration: int) -> str:
    return f"jobs/{job_id}/snapshots/{iteration:06d}.png"


def result_key(job_id: str) -> str:
    return f"jobs/{job_id}/result.png"


def history_key(job_id: str) -> str:
    return f"jobs/{job_id}/history.json"
