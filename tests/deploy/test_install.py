"""deploy/install.sh lays out a service host the units can start from (issue 16, defects 9 and 14).

Each run goes into a scratch root (--root); the service user `semalign` is the host's own.
The units are verified by running their ExecStart as their User with only their Environment
and WorkingDirectory, inside a network namespace of their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.config import load_config
from common.runtime import stop_process
from rx.config import RxConfig
from tests.deploy.units import (
    ROOT,
    Service,
    code_dir,
    install,
    parse_unit,
    scratch_dir,
    start_service,
)
from tests.procs import wait_for
from tx.config import TxConfig
from tx.ctl import CtlConfig

UNITS = ROOT / "deploy" / "systemd"
CONFIG = {"tx": TxConfig, "rx": RxConfig, "ctl": CtlConfig}


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("install.sh creates a user and chowns files: needs root")
    for tool in ("useradd", "setpriv", "install"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


def keygen(name: str, out: Path) -> None:
    subprocess.run([sys.executable, "-m", "common.cli", "keygen", name, "--out", str(out)], check=True,
                   capture_output=True, timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def operator_dir(base: Path) -> Path:
    """~/semalign as README's steps leave it on one laptop holding every role's files."""
    home = base / "semalign"
    for sub in ("keys", "allow-tx", "allow-ops", "allow-monitor", "tls"):
        (home / sub).mkdir(parents=True)
    for name in ("tx", "rx", "op"):
        keygen(name, home / "keys")
    shutil.copy(home / "keys/tx.key", home / "allow-tx")
    shutil.copy(home / "keys/op.key", home / "allow-ops")
    shutil.copy(home / "keys/op.key", home / "allow-monitor")
    certs = ROOT / "deploy/tls/tls-certs.sh"
    for args in (["ca"], ["server", "tx-metrics", "127.0.0.1"], ["server", "rx-metrics", "127.0.0.1"]):
        subprocess.run([str(certs), args[0], str(home / "tls"), *args[1:]], check=True, capture_output=True,
                       timeout=60)
    return home


@pytest.fixture()
def host(digits_bundle_dir: Path) -> Iterator[dict[str, Path]]:
    needs_root()
    with scratch_dir("semalign-install-") as scratch:
        yield {"from": operator_dir(scratch / "home"), "root": scratch / "root", "code": code_dir(scratch),
               "bundle": digits_bundle_dir}


def run_install(host: dict[str, Path], role: str) -> None:
    extra = {"tx": ["--bundle", str(host["bundle"]), "--rx", "127.0.0.1"], "rx": ["--bundle", str(host["bundle"])],
             "op": ["--tx", "127.0.0.1", "--rx", "127.0.0.1"]}[role]
    done = install(role, "--from", str(host["from"]), *extra, root=host["root"], code=host["code"])
    assert done.returncode == 0, done.stderr


def tree(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every path under root with its mode, owner, group and content hash."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, digest)
    return out


def strings(values: Any) -> Iterator[str]:
    if isinstance(values, dict):
        for v in values.values():
            yield from strings(v)
    elif isinstance(values, str):
        yield values


@pytest.mark.parametrize("role", ["tx", "rx"])
def test_install_lays_out_the_state_dir_with_owners_modes_and_absolute_paths(host: dict[str, Path],
                                                                             role: str) -> None:
    run_install(host, role)
    account = pwd.getpwnam("semalign")
    state = host["root"] / "var/lib/semalign"
    for sub in ("keys", "allow-monitor", "tls", "bundles", "data", "allow-ops" if role == "tx" else "allow-tx"):
        assert (state / sub).is_dir(), sub
    secret = state / "keys" / f"{role}.key_secret"
    st = secret.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, account.pw_uid, account.pw_gid)
    assert stat.S_IMODE((state / "keys").stat().st_mode) == 0o700
    tls_key = (state / "tls" / f"{role}-metrics.key").stat()
    assert (stat.S_IMODE(tls_key.st_mode), tls_key.st_uid) == (0o600, account.pw_uid)
    config_path = host["root"] / "etc/semalign" / f"{role}.yaml"
    config = yaml.safe_load(config_path.read_text())
    paths = [s for s in strings(config) if "/" in s and not s.startswith("tcp://")]
    assert paths and all(p.startswith(str(state)) for p in paths), paths
    for path in paths:
        assert Path(path).exists() or path.endswith("-metrics.jsonl"), path
    assert config["bundle"] == str(state / "bundles/digits") and config["dataset"] == "digits"
    # Metrics off loopback only with the certificates the operator made for this host.
    assert config["prometheus_addr"] == "0.0.0.0"
    assert config["prometheus_cert"] == str(state / f"tls/{role}-metrics.crt")
    assert config["prometheus_client_ca"] == str(state / "tls/ca.crt")
    load_config(CONFIG[role], config_path)  # every setting it wrote is one the daemon knows
    unit = Service.from_unit(host["root"] / f"etc/systemd/system/semalign-{role}.service")
    assert unit.argv[unit.argv.index("--config") + 1] == str(config_path)
    assert unit.working_directory == state and unit.user == "semalign"


def test_install_is_idempotent_and_allow_lists_mirror_the_source(host: dict[str, Path]) -> None:
    for role in ("rx", "tx", "op"):
        run_install(host, role)
    first = tree(host["root"])
    for role in ("rx", "tx", "op"):
        run_install(host, role)
    assert tree(host["root"]) == first
    # An operator's key withdrawn from the laptop's allow-list goes from the service's too.
    keygen("op2", host["from"] / "allow-monitor")
    run_install(host, "rx")
    assert sorted(p.name for p in (host["root"] / "var/lib/semalign/allow-monitor").iterdir()) == ["op.key", "op2.key"]
    (host["from"] / "allow-monitor/op2.key").unlink()
    run_install(host, "rx")
    assert tree(host["root"]) == first


def test_install_op_writes_ctl_yaml_naming_the_operators_own_files(host: dict[str, Path]) -> None:
    run_install(host, "op")
    ctl = yaml.safe_load((host["root"] / "etc/semalign/ctl.yaml").read_text())
    keys = host["from"] / "keys"
    assert ctl["tx"] == "tcp://127.0.0.1:5556" and ctl["security"] == {"key": str(keys / "op.key_secret"),
                                                                      "peer": str(keys / "tx.key")}
    assert (ctl["tx_monitor"], ctl["rx_monitor"], ctl["rx_peer"]) == (
        "tcp://127.0.0.1:5557", "tcp://127.0.0.1:5558", str(keys / "rx.key"))
    load_config(CONFIG["ctl"], host["root"] / "etc/semalign/ctl.yaml")


@pytest.mark.parametrize(("args", "message"), [
    (["tx", "--bundle", "{bundle}"], "tx needs --rx RX_HOST"),
    (["rx"], "rx needs --bundle"),
    (["rx", "--bundle", "{from}"], "metadata.json is missing"),
    (["tx", "--bundle", "{bundle}", "--rx", "h", "--data-dir", "/nonexistent"], "/nonexistent does not exist"),
    (["ops"], "expected the role tx, rx or op first, got 'ops'"),
    # A host name goes into endpoints and YAML as it is: a newline would add settings.
    (["op", "--tx", "h\njournal: /etc/passwd", "--rx", "h"], "expected a host name or address"),
    (["tx", "--bundle", "{bundle}", "--rx", "h;rm"], "expected a host name or address, got 'h;rm'"),
])
def test_install_refuses_what_it_cannot_lay_out(host: dict[str, Path], args: list[str], message: str) -> None:
    argv = [a.format(bundle=host["bundle"], **{"from": host["from"]}) for a in args]
    done = install(argv[0], "--from", str(host["from"]), *argv[1:], root=host["root"], code=host["code"])
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_install_refuses_a_bundle_naming_a_path_as_its_dataset(host: dict[str, Path], tmp_path: Path) -> None:
    """The bundle comes from the other laptop; its dataset name became a path under /var/lib
    that install.sh replaced as root (``rm -rf``), and a YAML value."""
    forged = tmp_path / "forged"
    shutil.copytree(host["bundle"], forged)
    meta = json.loads((forged / "metadata.json").read_text())
    (forged / "metadata.json").write_text(json.dumps({**meta, "dataset": "../../../../etc"}))
    done = install("rx", "--from", str(host["from"]), "--bundle", str(forged), "--data-dir", str(host["from"]),
                   root=host["root"], code=host["code"])
    assert done.returncode == 2 and "unknown dataset '../../../../etc'" in done.stderr, done.stderr
    assert not (host["root"] / "var/lib/semalign").exists()  # refused before anything was laid out


@pytest.mark.parametrize("unit", sorted(UNITS.glob("semalign-*.service")), ids=lambda p: p.name)
def test_units_take_dataset_and_bundle_from_the_config(unit: Path) -> None:
    (exec_start,) = parse_unit(unit)["Service"]["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[:2] == ["/opt/semalign/.venv/bin/semalign", unit.stem.split("-")[1]], argv
    assert not {"--bundle", "--dataset", "--data-dir"} & set(argv), argv
    assert argv[argv.index("--config") + 1] == f"/etc/semalign/{argv[1]}.yaml"


@pytest.mark.slow
def test_each_unit_starts_as_its_user_from_what_install_laid_out(host: dict[str, Path]) -> None:
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (a network namespace keeps the daemons' ports private)")
    for role in ("rx", "tx"):
        run_install(host, role)
    ns = f"sa_unit{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {role: host["root"] / f"{role}.log" for role in ("rx", "tx")}
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=30)
        for role, ready in (("rx", "rx_ready"), ("tx", "rx_connected")):
            procs[role] = start_service(host["root"] / f"etc/systemd/system/semalign-{role}.service", ns,
                                        logs[role], ready)
        metrics = host["root"] / "var/lib/semalign/tx-metrics.jsonl"
        wait_for(metrics.exists, 60, "TX's first batch in its metrics file")
        assert metrics.stat().st_uid == pwd.getpwnam("semalign").pw_uid
        for role in ("tx", "rx"):
            assert stop_process(procs.pop(role), 20) == 0, logs[role].read_text()[-3000:]
    finally:
        for proc in procs.values():
            stop_process(proc, 5)
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)
