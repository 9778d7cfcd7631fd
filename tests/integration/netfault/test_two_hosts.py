"""TX and RX on two network namespaces (a third plays a stranger), with CURVE on, through faults.

One run, in order: 150 ms one-way delay with 20 ms jitter and 5 % packet loss each way for
the whole test; a 5 s outage; a 20 s outage during which RX is killed with SIGKILL and
restarted; TX killed with SIGKILL and restarted. No batch may be lost or left unacknowledged. Meanwhile the
stranger's control and data attempts are refused, and a capture of the link shows none of
the batch bytes in clear.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.netfault.lab import ADDRESS, ROOT, Lab
from tests.integration.test_secure_daemons import make_keys
from tests.procs import metrics, wait_for
from tx.ctl import EXIT_REFUSED

pytestmark = pytest.mark.slow

DATA_PORT, RELAY_PORT, CONTROL_PORT = 5555, 5565, 5556
DELAY_MS, JITTER_MS, LOSS_PERCENT = 150, 20, 5
ACK_TIMEOUT_S = 2.0


@pytest.fixture()
def lab() -> Iterator[Lab]:
    reason = Lab.unavailable()
    if reason is not None:
        pytest.skip(f"two-host fault tests: {reason}")
    with Lab() as built:
        yield built


class Run:
    """The daemons of the test and the operator's ctl, all inside the lab."""

    def __init__(self, lab: Lab, bundle: Path, keys: Path, tmp: Path, endpoint: str) -> None:
        self.lab, self.bundle, self.keys, self.tmp, self.endpoint = lab, bundle, keys, tmp, endpoint
        self.control = f"tcp://{ADDRESS['tx']}:{CONTROL_PORT}"

    def rx(self, name: str) -> subprocess.Popen[bytes]:
        k = self.keys
        return self.lab.cli("rx", ["rx", "--dataset", "digits", "--bundle", str(self.bundle), "--gpsd", "off",
                                   "--bind", f"tcp://{ADDRESS['rx']}:{DATA_PORT}",
                                   "--security-key", str(k / "rx/rx.key_secret"),
                                   "--security-allow", str(k / "rx-allow"),
                                   "--metrics-out", str(self.tmp / "rx.jsonl")], self.tmp / f"{name}.log")

    def tx(self, name: str, batches: int) -> subprocess.Popen[bytes]:
        k = self.keys
        return self.lab.cli("tx", ["tx", "--dataset", "digits", "--bundle", str(self.bundle), "--gpsd", "off",
                                   "--endpoint", self.endpoint, "--control", self.control,
                                   "--batches", str(batches), "--interval", "0.3", "--max-inflight", "2",
                                   "--ack-timeout", str(ACK_TIMEOUT_S), "--max-attempts", "12",
                                   "--security-key", str(k / "tx/tx.key_secret"),
                                   "--security-peer", str(k / "rx/rx.key"),
                                   "--security-allow", str(k / "tx-allow"),
                                   "--metrics-out", str(self.tmp / f"{name}.jsonl")], self.tmp / f"{name}.log")

    def ctl(self, *command: str, who: str = "op", role: str = "tx", extra: tuple[str, ...] = ()) -> dict[str, Any]:
        k = self.keys
        done = self.lab.run(role, [sys.executable, "-m", "common.cli", "ctl", "--tx", self.control, "--json",
                                   "--timeout", "2", "--security-key", str(k / f"{who}/{who}.key_secret"),
                                   "--security-peer", str(k / "tx/tx.key"), *extra, *command], timeout=30)
        if done.returncode not in (0, 1):
            return {"ok": None, "rc": done.returncode, "stderr": done.stderr}
        out: dict[str, Any] = json.loads(done.stdout)
        return out

    def status(self) -> dict[str, Any]:
        reply = self.ctl("status")
        assert reply["ok"], reply
        status: dict[str, Any] = reply["status"]
        return status


STRANGER_DATA = r"""
import sys, zmq, zmq.auth
from common.wire import messages
ctx = zmq.Context()
sock = ctx.socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 0)
if sys.argv[2] == "key":
    sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(sys.argv[3])
    sock.curve_serverkey = zmq.auth.load_certificate(sys.argv[4])[0]
sock.connect(sys.argv[1])
sock.send_multipart([messages.Hello(bundle="0" * 64, role="tx").encode()])
print("answered" if sock.poll(3000) else "silent")
"""


def start_stranger(run: Run) -> dict[str, subprocess.Popen[str]]:
    """The stranger's four attempts, run in the background (the outages do not touch its path)."""
    k = run.keys
    data = f"tcp://{ADDRESS['rx']}:{DATA_PORT}"
    base = ["ip", "netns", "exec", run.lab.ns["stranger"], sys.executable]
    ctl = [*base, "-m", "common.cli", "ctl", "--tx", run.control, "--timeout", "1"]
    argv = {
        "data_key": [*base, "-c", STRANGER_DATA, data, "key", str(k / "stranger/stranger.key_secret"),
                     str(k / "rx/rx.key")],
        "data_plain": [*base, "-c", STRANGER_DATA, data, "plain"],
        "control_key": [*ctl, "--security-key", str(k / "stranger/stranger.key_secret"),
                        "--security-peer", str(k / "tx/tx.key"), "set-modulation", "bpsk"],
        "control_plain": [*ctl, "--security-insecure", "pause"],
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return {name: subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
            for name, a in argv.items()}


def stranger_results(procs: dict[str, subprocess.Popen[str]]) -> dict[str, tuple[int, str]]:
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        out[name] = (proc.returncode, stdout.strip() or stderr.strip()[-300:])
    return out


def wait_acked(run: Run, at_least: int, timeout: float, what: str) -> int:
    """Wait until TX's metrics file holds ``at_least`` acknowledged batches (no process per poll)."""
    def acked() -> int:
        return sum(r["status"] == "ok" for r in metrics(run.tmp / "tx1.jsonl"))
    wait_for(lambda: acked() >= at_least, timeout, what, interval=0.2)
    return acked()


def test_two_hosts_through_faults_lose_nothing_and_let_no_stranger_in(
        lab: Lab, digits_bundle_dir: Path, tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    notes: list[str] = []
    if lab.try_netem(DELAY_MS, JITTER_MS):
        endpoint = f"tcp://{ADDRESS['rx']}:{DATA_PORT}"
        notes.append("delay: tc netem")
    else:
        relay = [sys.executable, "-m", "tests.integration.netfault.relay", f"{ADDRESS['rx']}:{RELAY_PORT}",
                 f"{ADDRESS['rx']}:{DATA_PORT}", "--delay-ms", str(DELAY_MS), "--jitter-ms", str(JITTER_MS)]
        lab.spawn("rx", relay, tmp_path / "relay.log")
        endpoint = f"tcp://{ADDRESS['rx']}:{RELAY_PORT}"
        notes.append("delay: userspace relay (no netem in this kernel)")
    if not lab.nft_available():
        pytest.skip("two-host fault tests: nftables is unavailable, so neither loss nor outages can be made")
    lab.set_loss(LOSS_PERCENT)
    capture = tmp_path / "link.pcap"
    tcpdump = None
    captured = False
    if shutil.which("tcpdump"):
        tcpdump = lab.spawn("tx", ["tcpdump", "-i", "eth0", "-U", "-s", "0", "-w", str(capture), "tcp"],
                            tmp_path / "tcpdump.log")
    else:
        notes.append("no tcpdump: capture check skipped")
    run = Run(lab, digits_bundle_dir, keys, tmp_path, endpoint)
    rx = run.rx("rx1")
    tx = run.tx("tx1", 0)
    rx2 = None
    try:
        wait_for(lambda: run.ctl("status").get("ok"), 90, "TX's control socket", interval=1.0)
        wait_acked(run, 3, 120, "three batches acknowledged through delay and loss")
        strangers = start_stranger(run)
        # 5 s outage; then 20 s, during which RX is killed with SIGKILL and restarted (its
        # laptop rebooted while the link was down): both must cost no batch.
        for outage_s, kill_rx in ((5.0, False), (20.0, True)):
            before = wait_acked(run, 0, 1, "")
            lab.outage(True)
            if kill_rx:
                rx.kill()
                rx.wait(10)
                rx2 = run.rx("rx2")
            time.sleep(outage_s)
            lab.outage(False)
            wait_acked(run, before + 3, 90, f"three more batches after a {outage_s:g} s outage")
            if tcpdump is not None:
                tcpdump.send_signal(signal.SIGINT)
                tcpdump.wait(10)
                tcpdump = None
                captured = True
        refused = stranger_results(strangers)
        assert refused["data_key"] == (0, "silent") and refused["data_plain"] == (0, "silent"), refused
        # A stranger's own key is refused by TX's allow-list, and ctl says so (issue 16, defect 12);
        # a plain client gets no answer at all. Neither gets a reply.
        assert refused["control_key"][0] == EXIT_REFUSED and "refused" in refused["control_key"][1], refused
        assert refused["control_plain"][0] == 3, refused
        assert run.status()["control_refused"] >= 1
        assert run.ctl("pause")["ok"]
        settled = wait_for(lambda: (s := run.status())["inflight"] == 0 and s, 60, "TX's batches to settle",
                           interval=0.5)
        assert settled["lost"] == 0 and settled["acked"] == settled["built"], settled
        tx.kill()
        tx.wait(10)
        tx2 = run.tx("tx2", 4)
        assert tx2.wait(180) == 0, (tmp_path / "tx2.log").read_text()[-3000:]
    finally:
        for proc in (tx, rx, rx2):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
    first, second = metrics(tmp_path / "tx1.jsonl"), metrics(tmp_path / "tx2.jsonl")
    assert first and all(r["status"] == "ok" for r in first), [r for r in first if r["status"] != "ok"]
    assert sorted(r["batch"] for r in first) == list(range(settled["built"]))
    assert sorted(r["batch"] for r in second) == [0, 1, 2, 3] and all(r["status"] == "ok" for r in second)
    assert len({r["run"] for r in first} | {r["run"] for r in second}) == 2
    rx_records = metrics(tmp_path / "rx.jsonl")
    assert len({r["tx_run"] for r in rx_records}) == 2 and len({r["run"] for r in rx_records}) == 2
    if captured:
        pcap = capture.read_bytes()
        sent = sum(r["payload_bytes"] for r in first[:3])
        assert len(pcap) > sent, "the capture saw less than the batches' bytes"
        bundle_hash = json.loads((digits_bundle_dir / "metadata.json").read_text())["hash"]
        for marker in (bundle_hash.encode(), b"batch_id", b"t_a_ns", b"256qam", b"set-modulation"):
            assert marker not in pcap, f"{marker!r} travelled in clear"
    print("; ".join(notes))
