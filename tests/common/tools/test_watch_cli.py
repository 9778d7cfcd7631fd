"""``semalign watch`` without the ``monitor`` extra (issue 16, defect 13): one line naming the
pip command and exit 2, instead of a ModuleNotFoundError traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("missing", ["textual", "textual_plotext"])
def test_watch_without_the_monitor_extra_names_the_pip_command(missing: str) -> None:
    script = (
        "import sys\n"
        f"sys.modules[{missing!r}] = None  # what an install without the extra looks like to import\n"
        "from common.cli import main\n"
        "sys.exit(main(['watch', '--tx', 'tcp://127.0.0.1:5557']))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"semalign watch: error: the dashboard needs the monitor extra ({missing} is not installed): "
        "pip install 'semalign[monitor]'"
    ]
