"""Network namespaces for fault tests: TX's laptop, RX's laptop, an operator's and a stranger on one LAN.

    tx (10.213.0.1) --veth--+
    stranger (10.213.0.3) --veth--+-- br0 in rx (10.213.0.2)
    op (10.213.0.4) --veth--+

Every address lives inside namespaces this module creates and deletes; nothing leaves the
machine. Delay comes from ``tc netem`` where the kernel has it, else from the userspace
relay (``relay.py``) run inside rx; loss and outages from nftables rules in rx.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from common.runtime import spawn, stop_process

ROOT = Path(__file__).resolve().parents[3]
SUBNET = "10.213.0"
ADDRESS = {"tx": f"{SUBNET}.1", "rx": f"{SUBNET}.2", "stranger": f"{SUBNET}.3", "op": f"{SUBNET}.4"}
TABLE = "semalign_fault"
#: Per-namespace files ``ip netns exec`` mounts over /etc (ip-netns(8)).
NETNS_ETC = Path("/etc/netns")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


class Lab:
    """The namespaces, named with this process's id so parallel runs do not collide."""

    def __init__(self) -> None:
        tag = f"sa{os.getpid() % 100000}"
        self.ns = {role: f"{tag}{role[:2]}" for role in ADDRESS}
        self.netem = False
        self.procs: list[subprocess.Popen[bytes]] = []

    # -- set-up --------------------------------------------------------------------------

    @staticmethod
    def unavailable() -> str | None:
        """Why the lab cannot be built here, or None."""
        if os.geteuid() != 0:
            return "needs root (network namespaces)"
        if shutil.which("ip") is None:
            return "needs iproute2 (ip)"
        probe = f"sa_probe{os.getpid() % 100000}"
        made = _run("ip", "netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"cannot create a network namespace: {made.stderr.strip()}"
        _run("ip", "netns", "del", probe, check=False)
        return None

    def up(self) -> Lab:
        ns = self.ns
        for name in ns.values():
            _run("ip", "netns", "add", name)
        _run("ip", "-n", ns["rx"], "link", "add", "br0", "type", "bridge")
        for role in (r for r in ADDRESS if r != "rx"):
            _run("ip", "link", "add", "eth0", "netns", ns[role], "type", "veth", "peer", "name", f"p{role[:2]}",
                 "netns", ns["rx"])
            _run("ip", "-n", ns["rx"], "link", "set", f"p{role[:2]}", "master", "br0")
            _run("ip", "-n", ns["rx"], "link", "set", f"p{role[:2]}", "up")
            _run("ip", "-n", ns[role], "addr", "add", f"{ADDRESS[role]}/24", "dev", "eth0")
            _run("ip", "-n", ns[role], "link", "set", "eth0", "up")
        _run("ip", "-n", ns["rx"], "addr", "add", f"{ADDRESS['rx']}/24", "dev", "br0")
        _run("ip", "-n", ns["rx"], "link", "set", "br0", "up")
        for name in ns.values():
            _run("ip", "-n", name, "link", "set", "lo", "up")
        return self

    def name_hosts(self, names: Mapping[str, str]) -> None:
        """Give every namespace a hosts file mapping ``names`` (role -> host name) to the roles'
        addresses: ``ip netns exec`` mounts /etc/netns/NS/hosts over /etc/hosts."""
        lines = ["127.0.0.1 localhost", *(f"{ADDRESS[role]} {name}" for role, name in names.items())]
        for name in self.ns.values():
            directory = NETNS_ETC / name
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "hosts").write_text("\n".join(lines) + "\n")

    def down(self) -> None:
        for proc in self.procs:
            stop_process(proc, 5)
        for name in self.ns.values():
            _run("ip", "netns", "del", name, check=False)
            shutil.rmtree(NETNS_ETC / name, ignore_errors=True)

    # -- impairments ---------------------------------------------------------------------

    def try_netem(self, delay_ms: int, jitter_ms: int) -> bool:
        """Delay TX's outgoing and RX's incoming-side traffic with netem; False if the kernel lacks it."""
        done = _run("ip", "netns", "exec", self.ns["tx"], "tc", "qdisc", "add", "dev", "eth0", "root", "netem",
                    "delay", f"{delay_ms}ms", f"{jitter_ms}ms", check=False)
        if done.returncode != 0:
            return False
        _run("ip", "netns", "exec", self.ns["rx"], "tc", "qdisc", "add", "dev", "ptx", "root", "netem",
             "delay", f"{delay_ms}ms", f"{jitter_ms}ms")
        self.netem = True
        return True

    def nft_available(self) -> bool:
        if shutil.which("nft") is None:
            return False
        done = self.nft(f"add table inet {TABLE}", check=False)
        return done.returncode == 0

    def nft(self, rule: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", self.ns["rx"], "nft", *rule.split(), check=check)

    def set_loss(self, percent: int) -> None:
        """Drop ``percent`` % of the packets between TX and RX, each way (in rx)."""
        self.nft(f"add chain inet {TABLE} loss {{ type filter hook prerouting priority -10 ; }}")
        self.nft(f"add rule inet {TABLE} loss ip saddr {ADDRESS['tx']} ip daddr {ADDRESS['rx']} "
                 f"numgen random mod 100 < {percent} drop")
        self.nft(f"add chain inet {TABLE} loss_out {{ type filter hook output priority -10 ; }}")
        self.nft(f"add rule inet {TABLE} loss_out ip daddr {ADDRESS['tx']} numgen random mod 100 < {percent} drop")

    def outage(self, on: bool) -> None:
        """Drop every packet between TX and RX (both ways) while on.

        Rules name both addresses: with ``br_netfilter`` loaded, traffic bridged between TX
        and the stranger passes these hooks too, and must not be cut.
        """
        if on:
            self.nft(f"add chain inet {TABLE} cut {{ type filter hook prerouting priority -20 ; }}")
            self.nft(f"add rule inet {TABLE} cut ip saddr {ADDRESS['tx']} ip daddr {ADDRESS['rx']} drop")
            self.nft(f"add chain inet {TABLE} cut_out {{ type filter hook output priority -20 ; }}")
            self.nft(f"add rule inet {TABLE} cut_out ip daddr {ADDRESS['tx']} drop")
        else:
            self.nft(f"delete chain inet {TABLE} cut", check=False)
            self.nft(f"delete chain inet {TABLE} cut_out", check=False)

    # -- processes -----------------------------------------------------------------------

    def spawn(self, role: str, argv: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
        """Run ``argv`` inside ``role``'s namespace (``ip netns exec`` execs it: the pid is the program's)."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        proc = spawn(["ip", "netns", "exec", self.ns[role], *argv], log_path, env=env, cwd=ROOT, append=True)
        self.procs.append(proc)
        return proc

    def cli(self, role: str, args: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
        return self.spawn(role, [sys.executable, "-m", "common.cli", *args], log_path)

    def run(self, role: str, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run(["ip", "netns", "exec", self.ns[role], *argv], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=ROOT, check=False)

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.down()
