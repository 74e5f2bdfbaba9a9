"""The Temporal UI in a real headless browser (bench/ui_check.py): every outcome and provider
readable in the Workflows list as `boxoffice dev` serves it, a purchase's input decoded for the
signed-in browser and not for a stranger. Skipped without Debian's chromium and the playwright
package (`apt-get install -y chromium && pip install playwright`; CI does not install them)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(
    not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None,
    reason="needs /usr/bin/chromium and the playwright package",
)
def test_the_ui_shows_outcomes_and_decodes_for_the_operator_only(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ui_check.py"), "--shots", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ui-stuck       the order's undo fails" in done.stdout and "NO" not in done.stdout.split()
