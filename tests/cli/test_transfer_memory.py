"""`stylequeue transfer` on the user's own machine: no service cap on the size; the memory
budget (--memory, STYLEQUEUE_WORKER_MEMORY, else what the machine has free) decides, tiles
above what fits, and a job that fits no way is refused before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from stylequeue.cli.transfer import transfer
from stylequeue.shared.memory import estimate_memory, estimate_tiled_memory
from stylequeue.shared.params import TransferParams
from stylequeue.shared.settings import Limits
from stylequeue.worker.engine.hardware import device_kind

WIDE = (40, 1100)  # a strip wider than the service's default cap (1024 px)
F32 = TransferParams(precision="float32")


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(2)
    content = (rng.random((*WIDE, 3)) * 255).astype(np.uint8)
    y, x = np.mgrid[0:48, 0:48]
    style = np.where((((x + y) // 5) % 2 == 0)[..., None], [230, 40, 30], [20, 40, 200])
    Image.fromarray(content).save(tmp_path / "content.png")
    Image.fromarray(style.astype(np.uint8)).save(tmp_path / "style.png")
    return tmp_path / "content.png", tmp_path / "style.png"


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(transfer, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def test_the_cli_paints_above_the_service_cap_in_tiles(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    content, style = images
    assert WIDE[1] > Limits().max_size
    device = device_kind()  # the machine's constants, as the CLI takes them
    untiled = estimate_memory(WIDE, F32, device=device)
    tiled = estimate_tiled_memory(WIDE, 256, F32, device=device)
    assert tiled < untiled
    budget = (tiled + untiled) // 2
    out = tmp_path / "out.png"
    code, stderr = _run(
        str(content), str(style), "-o", str(out), "--weights", "random", "--precision",
        "float32", "--iterations", "2", "--size", str(WIDE[1]), "--memory", str(budget),
        "--style-scale", "0.1",  # a 110 px style: the strip is what is tiled
    )  # fmt: skip
    assert code == 0, stderr
    with Image.open(out) as img:
        assert img.size == (WIDE[1], WIDE[0])
    assert "painting 1100x40 px in " in stderr and " tiles: untiled it needs about" in stderr
    assert "wrote" in stderr


def test_a_job_that_fits_no_way_is_refused_before_any_work(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    content, style = images
    out = tmp_path / "out.png"
    code, stderr = _run(
        str(content), str(style), "-o", str(out), "--weights", "random",
        "--iterations", "2", "--size", "1100", "--memory", "200MB",
    )  # fmt: skip
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: memory: a 1100x40 px job needs about ")
    assert "more than the memory budget of 200 MB; lower --size or raise --memory" in lines[0]
    assert not out.exists()


def test_the_budget_comes_from_the_environment_too(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    content, style = images
    code, stderr = _run(
        str(content), str(style), "-o", str(tmp_path / "o.png"), "--weights", "random",
        env={"STYLEQUEUE_WORKER_MEMORY": "150MB"},
    )  # fmt: skip
    assert code == 2 and "the memory budget of 150 MB" in stderr


@pytest.mark.parametrize("memory", ["lots", "0"])
def test_a_budget_that_is_not_a_size_is_one_line(
    images: tuple[Path, Path], tmp_path: Path, memory: str
) -> None:
    content, style = images
    code, stderr = _run(str(content), str(style), "-o", str(tmp_path / "o.png"), "--memory", memory)
    assert code == 2 and stderr.startswith("error: memory: ")
