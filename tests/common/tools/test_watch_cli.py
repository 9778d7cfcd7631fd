"""``semalign watch --config ctl.yaml``: the operator's file gives the endpoints and keys, flags win,
and every error names a setting watch has (issue 16, defect 10)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zmq.auth

from common.errors import ConfigError
from common.tools.watch.cli import WatchSettings, parser, watch_main
from tests.procs import ROOT

pytest.importorskip("textual")


def settings(*argv: str) -> WatchSettings:
    return WatchSettings.merge(parser().parse_args(list(argv)))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ctl.yaml"
    path.write_text(text)
    return path


CTL = """
tx: tcp://tx-laptop:5556
tx_monitor: tcp://tx-laptop:5557
rx_monitor: tcp://rx-laptop:5558
security: {key: /keys/op.key_secret, peer: /keys/tx.key}
rx_peer: /keys/rx.key
"""


def test_the_operators_file_gives_endpoints_and_keys(tmp_path: Path) -> None:
    got = settings("--config", str(write(tmp_path, CTL)))
    assert got == WatchSettings(tx="tcp://tx-laptop:5557", rx="tcp://rx-laptop:5558", control="tcp://tx-laptop:5556",
                                key="/keys/op.key_secret", tx_peer="/keys/tx.key", rx_peer="/keys/rx.key",
                                insecure=False)


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    got = settings("--config", str(write(tmp_path, CTL)), "--rx", "tcp://10.0.0.2:6000", "--rx-peer", "/other/rx.key",
                   "--control", "tcp://10.0.0.1:7000")
    assert (got.rx, got.rx_peer, got.control, got.tx) == ("tcp://10.0.0.2:6000", "/other/rx.key",
                                                          "tcp://10.0.0.1:7000", "tcp://tx-laptop:5557")


def test_the_shipped_ctl_yaml_is_a_watch_config() -> None:
    got = settings("--config", str(ROOT / "deploy" / "ctl.yaml"))
    assert got.tx.endswith(":5557") and got.rx is not None and got.rx.endswith(":5558")
    assert got.key and got.tx_peer and got.rx_peer and got.control and got.control.endswith(":5556")


@pytest.mark.parametrize(
    ("text", "argv", "says"),
    [
        # Before: "no security.key is set ... or security.insecure", settings watch did not have.
        ("tx_monitor: tcp://tx-laptop:5557\n", (), ("--key (security.key in --config ctl.yaml)",
                                                     "--tx-peer (security.peer in ctl.yaml)", "security.insecure: true")),
        (CTL.replace("rx_peer: /keys/rx.key", ""), (), ("RX's public key", "--rx-peer (rx_peer in ctl.yaml)")),
        (CTL.replace("peer: /keys/tx.key", "peer: null"), (), ("TX's public key", "--tx-peer (security.peer")),
        ("{}\n", (), ("--tx ENDPOINT, or tx_monitor: in --config ctl.yaml",)),
        ("tx_monitor: 127.0.0.1:5557\n", (), ("expected an endpoint such as tcp://HOST:PORT, got '127.0.0.1:5557'",)),
        ("rx_peer: /keys/rx.key\n", ("--tx", "tcp://127.0.0.1:5557"), ("--key (security.key",)),
    ],
)
def test_errors_name_settings_watch_has(tmp_path: Path, text: str, argv: tuple[str, ...],
                                        says: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        settings("--config", str(write(tmp_path, text)), *argv)
    for part in says:
        assert part in str(err.value)


def test_a_bad_screenshot_size_is_one_line() -> None:
    with pytest.raises(ConfigError, match="--size: expected COLUMNSxROWS such as 80x24, got '80by24'"):
        watch_main(["--tx", "tcp://127.0.0.1:5557", "--screenshot", "x.svg", "--size", "80by24"])


def test_insecure_in_the_file_allows_clear_text_off_loopback(tmp_path: Path) -> None:
    got = settings("--config", str(write(tmp_path, "tx_monitor: tcp://tx-laptop:5557\nsecurity: {insecure: true}\n")))
    assert got.insecure and got.key is None


def test_watch_config_connects_with_the_operators_key_and_shows_tx(tmp_path: Path) -> None:
    """End to end: a CURVE monitor that admits the operator's key, watch --config, a screenshot at 80x24."""
    from tests.common.tools.test_watch_source import Daemon

    for name in ("tx", "op"):
        zmq.auth.create_certificates(str(tmp_path), name)
        (tmp_path / f"{name}.key_secret").chmod(0o600)  # as keygen leaves it: a readable one is refused
    allow = tmp_path / "allow"
    allow.mkdir()
    shutil.copy(tmp_path / "op.key", allow)
    daemon = Daemon(tmp_path, allow)
    stop = threading.Event()

    def publish() -> None:
        seq = 0
        while not stop.wait(0.1):
            seq += 1
            daemon.publish(seq)

    thread = threading.Thread(target=publish)
    thread.start()
    config = write(tmp_path, f"tx_monitor: {daemon.endpoint}\nsecurity: {{key: {tmp_path / 'op.key_secret'}, "
                             f"peer: {tmp_path / 'tx.key'}}}\n")
    shot = tmp_path / "watch.svg"
    try:
        assert watch_main(["--config", str(config), "--screenshot", str(shot), "--screenshot-after", "2",
                           "--size", "80x24"]) == 0
    finally:
        stop.set()
        thread.join(10)
        daemon.close()
    assert f"TX&#160;live&#160;at&#160;{daemon.endpoint}" in shot.read_text()


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
