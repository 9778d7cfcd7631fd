"""``semalign demo --watch``: the demo's daemons shown in ``semalign watch`` while the demo runs.

The watcher is a child process on this terminal; meanwhile the demo's own table goes to a
file (printed lines would tear the dashboard) and is named when the watcher quits.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO, Any


class DemoWatch:
    def __init__(self, tx_monitor: str, rx_monitor: str, control: str, workdir: Path) -> None:
        self.table = workdir / "demo-table.txt"
        self.proc = subprocess.Popen([sys.executable, "-m", "common.cli", "watch", "--tx", tx_monitor,
                                      "--rx", rx_monitor, "--control", control])
        self._log: IO[str] = self.table.open("w", encoding="utf-8")
        self._saved: tuple[Any, Any] = (sys.stdout, sys.stderr)
        sys.stdout = sys.stderr = self._log

    def poll(self) -> int | None:
        """The watcher's exit code once the operator quit it (q), else None."""
        return self.proc.poll()

    def finish(self) -> None:
        """Wait for the operator to quit the watcher, then give the terminal back to the demo."""
        try:
            self.proc.wait()
        except KeyboardInterrupt:
            self.proc.terminate()
            self.proc.wait(10)
        sys.stdout, sys.stderr = self._saved
        self._log.close()
        print(f"the demo's table: {self.table}")
        print(self.table.read_text(encoding="utf-8"), end="")
