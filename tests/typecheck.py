"""Type-check the code as the package it installs as (``make test`` runs it).

mypy knows nothing of pyproject's package-dir mapping (``stylequeue.shared`` is the
folder ``shared/``), so it checks a tree of symlinks under ``build/typecheck`` that lays the
folders out the way an install does. Settings (strict for ``shared`` and the engine) are in
pyproject.toml's ``[tool.mypy]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("shared", "web", "worker", "hooks", "cli")


def layout(build: Path) -> Path:
    """``build/stylequeue/{__init__.py, shared, web, worker, hooks, cli}`` as symlinks; the root."""
    package = build / "stylequeue"
    package.mkdir(parents=True, exist_ok=True)
    links = {"__init__.py": ROOT / "stylequeue" / "__init__.py"}
    links.update({part: ROOT / part for part in PARTS})
    for name, target in links.items():
        link = package / name
        if link.is_symlink() and link.resolve() == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return package


def main() -> int:
    from mypy import api

    package = layout(ROOT / "build" / "typecheck")
    out, err, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), str(package)])
    sys.stdout.write(out)
    sys.stderr.write(err)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
