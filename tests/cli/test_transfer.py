"""`stylequeue transfer`: writes a PNG, fails with one clear line and a non-zero status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from stylequeue.cli.transfer import transfer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    y, x = np.mgrid[0:40, 0:48]
    content = np.stack([x * 5, y * 6, np.full_like(x, 120)], axis=-1).astype(np.uint8)
    style = np.where((((x + y) // 5) % 2 == 0)[..., None], [230, 40, 30], [20, 40, 200])
    Image.fromarray(content).save(tmp_path / "content.png")
    Image.fromarray(style.astype(np.uint8)).save(tmp_path / "style.jpg", quality=95)
    return tmp_path / "content.png", tmp_path / "style.jpg"


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(transfer, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def test_writes_the_png_and_snapshots(
    images: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STYLEQUEUE_VGG19_WEIGHTS", "random")  # the default for --weights
    content, style = images
    out = tmp_path / "out.png"
    snaps = tmp_path / "snaps"
    code, stderr = _run(
        str(content), str(style), "-o", str(out), "--iterations", "3", "--size", "48",
        "--snapshots", str(snaps), "--snapshot-every", "2", "--seed", "3",
    )  # fmt: skip
    assert code == 0, stderr
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (48, 40) and img.mode == "RGB"
    assert sorted(p.name for p in snaps.iterdir()) == ["iter_00002.png", "iter_00003.png"]
    assert "wrote" in stderr and "weights random" in stderr


def test_several_styles_with_blend_and_preserve_colors(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    content, style = images
    out = tmp_path / "out.png"
    code, stderr = _run(
        str(content), str(style), str(content), "-o", str(out), "--weights", "random",
        "--iterations", "2", "--size", "32", "--style-blend", "0.7,0.3", "--preserve-colors",
        "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    with Image.open(out) as img:
        assert img.size == (32, 27)


def test_lbfgs_and_scales_from_the_command_line(images: tuple[Path, Path], tmp_path: Path) -> None:
    content, style = images
    out = tmp_path / "out.png"
    snaps = tmp_path / "snaps"
    code, stderr = _run(
        str(content), str(style), "-o", str(out), "--weights", "random", "--iterations", "4",
        "--size", "48", "--optimizer", "lbfgs", "--scales", "2", "--lbfgs-history", "3",
        "--snapshots", str(snaps), "--snapshot-every", "1",
    )  # fmt: skip
    assert code == 0, stderr
    with Image.open(out) as img:
        assert img.size == (48, 40)
    # iterations 1-2 at 24 px, shown at the final size like 3-4
    for n in range(1, 5):
        with Image.open(snaps / f"iter_{n:05d}.png") as img:
            assert img.size == (48, 40), n
    assert "best loss" in stderr and "at iteration 4/4" in stderr, stderr


def test_missing_file_is_one_line_and_exit_2(images: tuple[Path, Path], tmp_path: Path) -> None:
    content, _ = images
    code, stderr = _run(str(content), str(tmp_path / "nope.png"), "-o", str(tmp_path / "o.png"))
    assert code == 2
    assert _one_error_line(stderr).startswith("error: style: no such file")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--iterations", "0"], "error: iterations: must be from 1 to"),
        (["--iterations", "many"], "error: iterations: must be an integer"),
        (["--size", "4"], "error: max_size: must be from 16 to"),
        (["--style-weight", "-1"], "error: style_weight:"),
        (["--precision", "float16"], "error: precision: must be one of"),
        (["--preset", "fancy"], "error: preset: unknown preset"),
        (["--style-blend", "1,2"], "error: style_blend: give one weight per style image"),
        (["--weights", "vgg.bin"], "error: weights: must be imagenet, random or a path"),
        (["--init", "zeros"], "error: init:"),
        (["--optimizer", "sgd"], "error: optimizer: must be one of adam, lbfgs"),
        (["--scales", "9"], "error: scales: must be from 1 to 4"),
        (["--scales", "3", "--iterations", "2"], "error: scales: 3 scales need at least 3"),
        (["--lbfgs-history", "0"], "error: lbfgs_history: must be from 1 to"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(
    images: tuple[Path, Path], tmp_path: Path, args: list[str], expected: str
) -> None:
    content, style = images
    code, stderr = _run(str(content), str(style), "-o", str(tmp_path / "o.png"), *args)
    assert code == 2
    assert _one_error_line(stderr).startswith(expected)


def test_unreadable_image_and_bad_output(images: tuple[Path, Path], tmp_path: Path) -> None:
    content, style = images
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image")
    code, stderr = _run(str(junk), str(style), "-o", str(tmp_path / "o.png"))
    assert code == 2 and _one_error_line(stderr).startswith("error: content: cannot read image")
    code, stderr = _run(str(content), str(style), "-o", str(tmp_path / "o.jpg"))
    assert code == 2 and _one_error_line(stderr).startswith("error: output: must end with .png")
    code, stderr = _run(str(content), str(style), "-o", str(tmp_path / "no" / "dir" / "o.png"))
    assert code == 2 and _one_error_line(stderr).startswith("error: output: directory")


def test_unavailable_weights_exit_1(images: tuple[Path, Path], tmp_path: Path) -> None:
    content, style = images
    missing = tmp_path / "vgg19.h5"
    code, stderr = _run(str(content), str(style), "-o", str(tmp_path / "o.png"),
                        "--weights", str(missing))  # fmt: skip
    assert code == 1
    line = _one_error_line(stderr)
    assert line.startswith("error: weights:") and "STYLEQUEUE_VGG19_WEIGHTS" in line


def test_entry_point_resolves_and_fails_fast_without_tensorflow(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    """Through the real `stylequeue` group: argument errors never import TensorFlow."""
    content, _ = images
    code = (
        "import sys\n"
        "from stylequeue.cli.main import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "finally:\n"
        "    assert 'tensorflow' not in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "transfer", str(content), str(tmp_path / "missing.jpg"),
         "-o", str(tmp_path / "o.png")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: style: no such file: {tmp_path / 'missing.jpg'}"


def test_engine_settings_are_read_and_passed_to_the_engine(
    images: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STYLEQUEUE_VGG19_WEIGHTS / _PRECISION / _ENGINE_XLA / _ENGINE_DETERMINISTIC go through
    the settings module to the engine's arguments (the engine itself reads no settings)."""
    from stylequeue.worker import engine

    seen: dict[str, Any] = {}
    real = engine.transfer

    def recording(content: Any, styles: Any, params: Any, **kwargs: Any) -> Any:
        seen.update(kwargs, precision=params.precision)
        return real(content, styles, params, **{**kwargs, "xla": False, "deterministic": None})

    monkeypatch.setattr(engine, "transfer", recording)
    monkeypatch.setenv("STYLEQUEUE_VGG19_WEIGHTS", "random")
    monkeypatch.setenv("STYLEQUEUE_PRECISION", "float32")
    monkeypatch.setenv("STYLEQUEUE_ENGINE_XLA", "ON")
    monkeypatch.setenv("STYLEQUEUE_ENGINE_DETERMINISTIC", "off")
    content, style = images
    args = [str(content), str(style), "-o", str(tmp_path / "o.png"), "--iterations", "1", "-q"]
    code, stderr = _run(*args)
    assert code == 0, stderr
    assert (seen["weights"], seen["precision"]) == ("random", "float32")
    assert (seen["xla"], seen["deterministic"]) == (True, False)

    monkeypatch.setenv("STYLEQUEUE_ENGINE_DETERMINISTIC", "auto")
    code, stderr = _run(*args, "--precision", "mixed_bfloat16")  # the option wins
    assert code == 0, stderr
    assert (seen["precision"], seen["deterministic"]) == ("mixed_bfloat16", None)


def test_bad_engine_setting_is_one_line_and_exit_2(
    images: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STYLEQUEUE_ENGINE_XLA", "sometimes")
    content, style = images
    code, stderr = _run(str(content), str(style), "-o", str(tmp_path / "o.png"))
    assert code == 2
    assert _one_error_line(stderr).startswith("error: settings: STYLEQUEUE_ENGINE_XLA must be")
