"""The install puts one package into site-packages, and each module has one name.

The repository keeps ``shared/``, ``web/``, ``worker/``, ``cli/`` and ``migrations/`` at its
top level; pyproject.toml maps them under ``stylequeue``. A module imported under two names
(``shared.settings`` and ``stylequeue.shared.settings``) would be two copies of its state.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("shared", "web", "worker", "hooks", "cli", "migrations")


def test_the_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("stylequeue-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"stylequeue"}, top
    # Everything a role needs at run time is inside: templates, static files, migrations.
    for needed in (
        "stylequeue/web/templates/",
        "stylequeue/web/static/js/",
        "stylequeue/migrations/env.py",
        "stylequeue/migrations/script.py.mako",
        "stylequeue/migrations/versions/",
        "stylequeue/worker/engine/core.py",
        "stylequeue/hooks/app.py",
        "stylequeue/cli/main.py",
    ):
        assert any(n.startswith(needed) for n in names), needed


def test_every_source_folder_is_a_mapped_package() -> None:
    """A new subpackage (a folder with __init__.py) must be listed in pyproject.toml."""
    import tomllib

    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = {"stylequeue"}
    for part in PARTS:
        for init in (ROOT / part).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            found.add(".".join(("stylequeue", *rel)))
    assert found == listed


def test_the_bare_part_names_are_not_importable_from_the_install() -> None:
    """Outside the repository (no checkout on sys.path) only ``stylequeue.*`` exists."""
    code = (
        "import importlib.util as u, stylequeue.shared.settings, stylequeue.web, "
        "stylequeue.cli.main, stylequeue.worker.app\n"
        f"print([p for p in {PARTS!r} if u.find_spec(p) is not None])"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, cwd="/"
    ).stdout.strip()
    assert out == "[]"


def test_importing_every_module_from_the_checkout_loads_no_bare_part_name() -> None:
    """In the repository (its root on sys.path, so ``import shared`` would succeed) every
    module imports its neighbours as ``stylequeue.*``: the lint rule TID251 refuses bare
    imports; this also catches strings (``import_module("shared.x")``, ``-A worker.app``)."""
    modules = []
    for part in PARTS:
        for path in sorted((ROOT / part).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("").parts
            if part == "migrations" and rel[-1] != "__init__":
                continue  # env.py and the versions run Alembic's context when imported
            modules.append(".".join(("stylequeue", *(rel[:-1] if rel[-1] == "__init__" else rel))))
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.', 1)[0] in {PARTS!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
