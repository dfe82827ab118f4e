"""`stylequeue transfer` runs on the user's own machine: a service's caps do not apply."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from stylequeue.cli.transfer import transfer
from stylequeue.shared.settings import Limits


def test_values_above_the_service_defaults_pass_the_parameter_checks(tmp_path: Path) -> None:
    defaults = Limits()
    result = CliRunner().invoke(
        transfer,
        [
            "content.png", "a.png", "b.png", "c.png", "d.png", "e.png",
            "-o", str(tmp_path / "missing" / "out.png"),
            "--size", str(defaults.max_size * 4),
            "--iterations", str(defaults.max_iterations * 5),
            "--snapshot-every", str(defaults.max_iterations * 2),
        ],
    )  # fmt: skip
    assert defaults.max_styles < 5
    assert result.exit_code == 2
    # the parameters passed; the first check to fail is the next one, the output directory
    assert result.stderr.startswith("error: output: directory does not exist"), result.stderr
