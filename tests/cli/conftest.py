"""Fixtures the CLI tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.web import images


@pytest.fixture
def pictures(tmp_path: Path) -> tuple[Path, Path]:
    """A photo and a painting on disk, as a user hands them to ``stylequeue submit``."""
    content, style = tmp_path / "photo.png", tmp_path / "painting.jpg"
    content.write_bytes(images.png())
    style.write_bytes(images.jpeg())
    return content, style
