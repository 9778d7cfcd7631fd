"""Acceptance: the README's "Running on two laptops", rehearsed on network namespaces (issue 16).

Four namespaces on one bridge: the RX laptop, the TX laptop, the operator's and a stranger's,
with the README's host names in their hosts files. The test reads the section's shell blocks
and runs them in order on the laptop each block names, so the README and this test cannot drift
apart. What stands in for what the namespaces cannot do:

- the clone and its venv: this checkout (the `pip install` line is not run; `semalign` on the
  PATH runs this checkout's code);
- `scp HOST:PATH`: a copy into that laptop's home (each laptop has its own HOME);
- `sudo deploy/install.sh`: the same with `--root` (a scratch root per laptop; /etc/semalign in
  the commands points there) and `--code` (the stand-in clone);
- `systemctl enable --now UNIT`: the unit file install.sh wrote, its ExecStart run as its User
  with its Environment and WorkingDirectory inside the laptop's namespace;
- MNIST: the embedded digits (DATASET below), so the rehearsal takes about a minute.

Then `watch` runs in tmux on the operator's laptop and its screen is read; both daemons' metrics
are read over mutual TLS; the stranger tries every port (data, control, both monitors, both
metrics endpoints) with no key, its own key and its own certificates, and gets nothing; TX is
paused and every batch it built is acknowledged.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.runtime import stop_process
from tests.deploy.units import ROOT, code_dir, scratch_dir, start_service
from tests.integration.netfault.lab import Lab
from tests.procs import wait_for

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
SECTION = "Running on two laptops"
HOSTS = {"rx": "rx-laptop.local", "tx": "tx-laptop.local", "op": "op-laptop.local", "stranger": "stranger.local"}
#: A block's first line names the laptops it runs on.
LAPTOPS = {"# RX laptop": ("rx",), "# TX laptop": ("tx",), "# operator": ("op",), "# every laptop": ("rx", "tx", "op")}
#: The README's MNIST arguments and what the rehearsal runs instead (seconds, not minutes).
DATASET = (
    ("--dataset mnist --data-dir ~/data/mnist --bank 150,100,60,40,20,10", "--dataset digits --bank 40,30,20,10"),
    (" --data-dir ~/data/mnist", ""),
    ("bundles/mnist", "bundles/digits"),
)
READY = {"rx": "rx_ready", "tx": "tx_start"}
PORTS = {"data": ("rx", 5555), "control": ("tx", 5556), "tx monitor": ("tx", 5557), "rx monitor": ("rx", 5558),
         "tx metrics": ("tx", 9101), "rx metrics": ("rx", 9102)}


def readme_steps() -> list[tuple[tuple[str, ...], str]]:
    """(laptops, command) for every line of the section's shell blocks, in order."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(SECTION)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, f"README has no section {SECTION!r}"
    steps = []
    for block in re.findall(r"^```sh\n(.*?)^```", match.group(1), re.M | re.S):
        first, *lines = block.splitlines()
        assert first in LAPTOPS, f"a block of {SECTION!r} must start with one of {sorted(LAPTOPS)}: {first!r}"
        steps += [(LAPTOPS[first], line.strip()) for line in lines if line.strip()]
    return steps


def test_readme_section_names_the_laptop_of_every_block() -> None:
    steps = readme_steps()
    assert any("deploy/install.sh rx" in c for _, c in steps) and any("semalign watch" in c for _, c in steps)
    for old, _ in DATASET:
        assert any(old in c for _, c in steps), f"the rehearsal replaces {old!r}, which the README no longer has"


def test_readme_leaves_no_step_to_guess() -> None:
    """Issue 16, defect 14: the venv, the bundle's bank, TX's dataset, the operator's files and
    TX's address in ctl.yaml are each a command of the section, not left to the reader."""
    commands = [c for _, c in readme_steps()]
    assert ". .venv/bin/activate" in commands
    assert any(c.startswith("semalign pretrain ") and " --bank " in c for c in commands)
    assert any(c.startswith("sudo deploy/install.sh tx ") and " --data-dir " in c and " --rx " in c
               for c in commands)
    assert any(c.startswith("sudo deploy/install.sh op ") and " --tx " in c for c in commands)
    assert any(c.startswith("semalign keygen op --out ~/semalign/keys") for c in commands)
    assert all("~/semalign" not in line for line in (ROOT / "deploy/systemd/semalign-tx.service").read_text()
               .splitlines() + (ROOT / "deploy/systemd/semalign-rx.service").read_text().splitlines())


@dataclass
class Rehearsal:
    lab: Lab
    scratch: Path
    code: Path
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: Steps that did not do what the README says (reported together at the end).
    failed: list[str] = field(default_factory=list)
    watch_screen: str = ""

    def home(self, laptop: str) -> Path:
        return self.scratch / "home" / laptop

    def root(self, laptop: str) -> Path:
        return self.scratch / "root" / laptop

    def env(self, laptop: str) -> dict[str, str]:
        return {"HOME": str(self.home(laptop)), "PATH": f"{self.code / '.venv/bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": "C.UTF-8", "TERM": "dumb"}

    def shell(self, laptop: str, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.lab.ns[laptop], "bash", "-c", command],
                              capture_output=True, text=True, timeout=timeout, env=self.env(laptop), cwd=ROOT,
                              check=False)

    # -- one README line -----------------------------------------------------------------

    def step(self, laptop: str, command: str) -> None:
        for old, new in DATASET:
            command = command.replace(old, new)
        command = command.replace("/etc/semalign/", f"{self.root(laptop)}/etc/semalign/")
        if command == "cd /opt/semalign" or command.startswith("python3 -m venv "):
            return  # the clone and its install: this checkout stands in
        if command == ". .venv/bin/activate":
            assert shutil.which("semalign", path=self.env(laptop)["PATH"]), "semalign is not on the PATH"
            return
        if command.startswith("scp "):
            self.scp(laptop, command)
            return
        unit = re.fullmatch(r"sudo systemctl daemon-reload && sudo systemctl enable --now semalign-(tx|rx)", command)
        if unit:
            self.start(laptop, unit.group(1))
            return
        if command.startswith("semalign watch "):
            self.watch(laptop, command)
            return
        install = re.match(r"sudo (deploy/install\.sh (tx|rx|op)) ", command)
        if install:
            command = f"{command[len('sudo '):]} --root {self.root(laptop)} --code {self.code}"
        assert not command.startswith("sudo "), f"no stand-in for {command!r}"
        # ctl and curl are typed once the daemons are up; they may still be starting.
        retry = command.startswith(("semalign ctl ", "curl "))
        deadline = time.monotonic() + (30 if retry else 0)
        while True:
            done = self.shell(laptop, command)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        if done.returncode != 0:
            self.failed.append(f"{laptop}$ {command}: exit {done.returncode}: {done.stderr.strip()[-600:]}")
        elif command.startswith("curl ") and "semalign_" not in done.stdout:
            self.failed.append(f"{laptop}$ {command}: no semalign metric in {done.stdout[:300]!r}")

    def scp(self, laptop: str, command: str) -> None:
        *sources, target = shlex.split(command)[1:]
        recursive = sources[0] == "-r"
        sources = sources[recursive:]
        host, _, path = target.partition(":")
        (dest_laptop,) = [role for role, name in HOSTS.items() if name == host]
        dest = self.home(dest_laptop) / path
        assert dest.is_dir(), f"{command}: {dest} does not exist on {host}"
        for source in sources:
            src = Path(source.replace("~", str(self.home(laptop)), 1))
            if recursive and src.is_dir():
                shutil.copytree(src, dest / src.name, dirs_exist_ok=True)
            else:
                shutil.copy(src, dest)

    def start(self, laptop: str, role: str) -> None:
        unit = self.root(laptop) / "etc/systemd/system" / f"semalign-{role}.service"
        self.procs[role] = start_service(unit, self.lab.ns[laptop], self.logs / f"{role}.log", READY[role])

    def watch(self, laptop: str, command: str) -> None:
        """Run ``command`` in a tmux window inside the laptop's namespace and read its screen."""
        socket = f"semalign-rehearsal-{os.getpid()}"
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in {**self.env(laptop), "TERM": "xterm-256color"}.items())
        # The pane outlives the command, so a refusal stays readable.
        inner = (f"ip netns exec {self.lab.ns[laptop]} env -i {env} bash -c "
                 f"{shlex.quote(f'cd {ROOT} && {command}; echo [watch exited $?]; sleep 600')}")
        subprocess.run(["tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-s", "watch", "-x", "100",
                        "-y", "32", inner], check=True, timeout=30)
        try:
            def screen() -> str:
                out = subprocess.run(["tmux", "-L", socket, "capture-pane", "-p", "-t", "watch"], capture_output=True,
                                     text=True, timeout=30, check=False).stdout
                self.watch_screen = out
                return out

            def settled() -> bool:
                text = screen()
                return "[watch exited" in text or ("64qam" in text and "waiting for" not in text)

            with contextlib.suppress(AssertionError):  # judged on the last screen below
                wait_for(settled, 60, "watch to show both daemons", interval=0.5)
            if "[watch exited" in self.watch_screen or "64qam" not in self.watch_screen \
                    or "waiting for" in self.watch_screen:
                self.failed.append(f"{laptop}$ {command}: the screen shows\n{self.watch_screen.rstrip()}")
        finally:
            subprocess.run(["tmux", "-L", socket, "kill-server"], check=False, timeout=30)

    # -- after the README --------------------------------------------------------------------

    def ctl(self, *command: str) -> dict[str, Any]:
        config = self.root("op") / "etc/semalign/ctl.yaml"
        done = self.shell("op", shlex.join(["semalign", "ctl", "--config", str(config), "--json", *command]))
        assert done.returncode == 0, done.stderr
        reply: dict[str, Any] = json.loads(done.stdout)
        return reply


STRANGER_ZMQ = r"""
import json, sys, time, zmq, zmq.auth
from common.wire import messages
secret, targets = sys.argv[1], json.loads(sys.argv[2])
ctx = zmq.Context()
socks = {}
for name, (endpoint, kind, server_key) in targets.items():
    sock = ctx.socket(zmq.SUB if kind == "sub" else zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if server_key:
        sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(secret)
        sock.curve_serverkey = zmq.auth.load_certificate(server_key)[0]
    sock.connect(endpoint)
    if kind == "sub":
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    else:
        sock.send_multipart([messages.Hello(bundle="0" * 64, role="tx").encode()])
    socks[name] = sock
poller = zmq.Poller()
for sock in socks.values():
    poller.register(sock, zmq.POLLIN)
answered = set()
end = time.monotonic() + 4.0
while time.monotonic() < end:
    for sock, _ in poller.poll(100):
        answered |= {n for n, s in socks.items() if s is sock}
        sock.recv_multipart()
print(json.dumps({name: name in answered for name in socks}))
"""


def stranger_gets_nothing(run: Rehearsal) -> dict[str, str]:
    """Every port with no key, the stranger's own key and its own certificates; what answered."""
    home = run.home("stranger")
    keys = home / "semalign"
    found: dict[str, str] = {}
    assert run.shell("stranger", "semalign keygen stranger --out ~/semalign && "
                     "deploy/tls/tls-certs.sh ca ~/semalign/tls && "
                     "deploy/tls/tls-certs.sh client ~/semalign/tls stranger").returncode == 0
    peer = {"rx": run.home("tx") / "semalign/keys/rx.key", "tx": run.home("op") / "semalign/keys/tx.key"}
    targets = {}
    for name, (laptop, port) in PORTS.items():
        if "metrics" in name:
            continue
        endpoint = f"tcp://{HOSTS[laptop]}:{port}"
        kind = "sub" if "monitor" in name else "dealer"
        targets[f"{name} plain"] = (endpoint, kind, "")
        targets[f"{name} own key"] = (endpoint, kind, str(peer[laptop]))
    done = run.shell("stranger", shlex.join([sys.executable, "-c", STRANGER_ZMQ, str(keys / "stranger.key_secret"),
                                             json.dumps(targets)]), timeout=60)
    assert done.returncode == 0, done.stderr
    found.update({name: "answered" for name, answered in json.loads(done.stdout).items() if answered})
    ctl = run.shell("stranger", shlex.join(["semalign", "ctl", "--tx", f"tcp://{HOSTS['tx']}:5556", "--json",
                                            "--timeout", "1", "--security-key", str(keys / "stranger.key_secret"),
                                            "--security-peer", str(peer["tx"]), "pause"]))
    if ctl.returncode == 0 or '"ok": true' in ctl.stdout:
        found["control via ctl, own key"] = ctl.stdout
    tls = home / "semalign/tls"
    operator_ca = run.home("op") / "semalign/tls/ca.crt"
    for name, (laptop, port) in PORTS.items():
        if "metrics" not in name:
            continue
        url = f"{HOSTS[laptop]}:{port}/metrics"
        for how, args in {"no certificate": ["--cacert", str(operator_ca), f"https://{url}"],
                          "own certificate": ["-k", "--cert", str(tls / "stranger.crt"), "--key",
                                              str(tls / "stranger.key"), f"https://{url}"],
                          "plain http": [f"http://{url}"]}.items():
            got = run.shell("stranger", shlex.join(["curl", "-sS", "--max-time", "5", *args]))
            if got.returncode == 0 or "semalign_" in got.stdout:
                found[f"{name}, {how}"] = got.stdout[:200]
    return found


@pytest.fixture()
def rehearsal(tmp_path: Path) -> Iterator[Rehearsal]:
    reason = Lab.unavailable()
    missing = [tool for tool in ("tmux", "setpriv", "curl", "openssl", "useradd") if shutil.which(tool) is None]
    if reason is None and missing:
        reason = f"needs {', '.join(missing)}"
    if reason is not None:
        pytest.skip(f"two-laptop rehearsal: {reason}")
    with scratch_dir("semalign-rehearsal-") as scratch, Lab() as lab:
        lab.name_hosts(HOSTS)
        for laptop in HOSTS:
            (scratch / "home" / laptop).mkdir(parents=True)
        run = Rehearsal(lab, scratch, code_dir(scratch), tmp_path)
        try:
            yield run
        finally:
            for proc in run.procs.values():
                stop_process(proc, 5)


def test_two_laptops_as_the_readme_says(rehearsal: Rehearsal) -> None:
    run = rehearsal
    for laptops, command in readme_steps():
        for laptop in laptops:
            run.step(laptop, command)
    assert set(run.procs) == {"tx", "rx"}, "the README started no daemon"
    # The link works and the operator steers it: batches at 64qam after the README's set-modulation.
    tx_metrics = run.root("tx") / "var/lib/semalign/tx-metrics.jsonl"
    from tests.procs import metrics

    wait_for(lambda: any(r.get("modulation") == "64qam" for r in metrics(tx_metrics)), 60,
             "a batch at 64qam acknowledged")
    intruded = stranger_gets_nothing(run)
    assert run.ctl("pause")["ok"]
    settled = wait_for(lambda: (s := run.ctl("status")["status"])["inflight"] == 0 and s, 60,
                       "TX's batches to settle", interval=0.5)
    assert settled["lost"] == 0 and settled["acked"] == settled["built"] >= 3, settled
    records = metrics(tx_metrics)
    assert records and all(r["status"] == "ok" for r in records), [r for r in records if r["status"] != "ok"]
    for role in ("tx", "rx"):
        code = stop_process(run.procs.pop(role), 20)
        assert code == 0, f"{role} exited {code} on SIGTERM:\n{(run.logs / f'{role}.log').read_text()[-2000:]}"
    assert not intruded, f"the stranger got answers: {intruded}"
    assert not run.failed, "steps of the README that did not work:\n" + "\n".join(run.failed)
