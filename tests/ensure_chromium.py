"""Install Debian's chromium for the browser tests when it is missing and we can (root + apt).

Run by ``make test`` before pytest; never downloads a browser of Playwright's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

CHROMIUM = "/usr/bin/chromium"


def main() -> int:
    if os.path.exists(CHROMIUM):
        return 0
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(
            f"warning: {CHROMIUM} is missing and cannot be installed here (need root + apt-get);"
            " browser tests will fail",
            file=sys.stderr,
        )
        return 1
    print("installing Debian's chromium for the browser tests ...", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
        check=False,
        env=env,
    )
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
