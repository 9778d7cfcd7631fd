"""Run a systemd unit's ExecStart the way systemd would, without systemd: its User and Group,
its Environment= only, its WorkingDirectory; and run deploy/install.sh into a scratch root.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shlex
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install.sh"
#: systemd's PATH for a service (systemd.exec(5), "Environment variables in spawned processes").
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file, each key with all its values in order (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: a setting before any section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@dataclasses.dataclass(frozen=True)
class Service:
    """What systemd would exec for a unit's [Service] section."""

    argv: tuple[str, ...]
    user: str
    group: str
    environment: Mapping[str, str]
    working_directory: Path

    @classmethod
    def from_unit(cls, path: Path) -> Service:
        service = parse_unit(path)["Service"]
        (exec_start,) = service["ExecStart"]
        user = service["User"][-1]
        account = pwd.getpwnam(user)
        # systemd sets these for a unit with User= (systemd.exec(5)); Environment= adds to them.
        env = {"PATH": SYSTEMD_PATH, "HOME": account.pw_dir, "USER": user, "LOGNAME": user,
               "SHELL": account.pw_shell}
        for assignments in service.get("Environment", []):
            for item in shlex.split(assignments):
                key, _, value = item.partition("=")
                env[key] = value
        return cls(argv=tuple(shlex.split(exec_start.lstrip("-@+!:"))), user=user,
                   group=service.get("Group", [user])[-1], environment=env,
                   working_directory=Path(service["WorkingDirectory"][-1]))

    def command(self) -> list[str]:
        """The unit's command as its user, with nothing of this process's environment."""
        return ["setpriv", f"--reuid={self.user}", f"--regid={self.group}", "--init-groups",
                "env", "-i", *(f"{k}={v}" for k, v in sorted(self.environment.items())), *self.argv]


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory the service user can traverse (pytest's tmp_path is root's only)."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir="/tmp") as name:
        os.chmod(name, 0o755)
        yield Path(name)


def service_python() -> tuple[str, list[str]]:
    """An interpreter the service user can run, and the import path that gives it this checkout.

    This interpreter may live where only root can reach (a pyenv build under /root); then the
    system's python3 of the same minor version runs this environment's site-packages.
    """
    real = Path(os.path.realpath(sys.executable))
    paths = [str(ROOT), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    if all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents):
        return sys.executable, paths
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        version = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                 text=True, timeout=30, check=False) if os.access(candidate, os.X_OK) else None
        if version is not None and version.stdout.strip() == str(sys.version_info[:2]):
            return candidate, paths
    raise FileNotFoundError(f"{sys.executable} is out of other users' reach and no python3 "
                            f"{sys.version_info[0]}.{sys.version_info[1]} is installed for them")


def code_dir(scratch: Path) -> Path:
    """A stand-in for the clone the units run (/opt/semalign): its .venv/bin/semalign runs this
    checkout's code as the service user can.

    The checkout and its site-packages may sit where only root can enter (a CI clone in a 0700
    temporary directory), so the service sees them through read-only bind mounts made in its
    own mount namespace (``start_service``), at ``code/lib/N``; nothing is copied, and nothing is
    mounted where this process or a clean-up of ``scratch`` could reach it.
    """
    python, paths = service_python()
    code = scratch / "code"
    targets = [code / "lib" / str(i) for i in range(len(paths))]
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
    exe = code / ".venv" / "bin" / "semalign"
    exe.parent.mkdir(parents=True, exist_ok=True)
    # Root (the operator's commands in the rehearsal) imports from the paths themselves; the
    # service user cannot enter them (Python skips such entries) and finds the mounts.
    search = ":".join([*paths, *map(str, targets)])
    exe.write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(search)} exec {shlex.quote(python)} -m common.cli "$@"\n')
    exe.chmod(0o755)
    return code


def code_mounts(argv0: str) -> list[tuple[str, str]]:
    """(source, target) bind mounts the stand-in clone at ``argv0``'s ``.venv/bin`` needs, if any."""
    lib = Path(argv0).parents[2] / "lib"
    if not lib.is_dir():
        return []
    _, paths = service_python()
    return [(path, str(lib / str(i))) for i, path in enumerate(paths)]


def install(role: str, *args: str, root: Path, code: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(INSTALL), role, *args, "--root", str(root), "--code", str(code)],
                          capture_output=True, text=True, timeout=120, check=False)


def start_service(unit: Path, netns: str, log: Path, ready: str, timeout: float = 90) -> subprocess.Popen[bytes]:
    """Start ``unit``'s ExecStart in network namespace ``netns`` and wait for ``ready`` in its log.

    The process must run as the unit's User (checked in /proc) and still be alive then.
    """
    from common.runtime import spawn
    from tests.procs import wait_for

    service = Service.from_unit(unit)
    command = service.command()
    mounts = code_mounts(service.argv[0])
    if mounts:
        # A private mount namespace for this service alone: the mounts die with it.
        script = " && ".join(f"mount --bind -o ro {shlex.quote(src)} {shlex.quote(dst)}" for src, dst in mounts)
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{script} && exec "$@"', "sh",
                   *command]
    proc = spawn(["ip", "netns", "exec", netns, *command], log, env={}, cwd=service.working_directory)
    wait_for(lambda: ready in log.read_text(errors="replace") or proc.poll() is not None, timeout,
             f"{unit.name}: {ready!r} in its log")
    assert proc.poll() is None, f"{unit.name} exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
    status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
    uids = set(next(line for line in status if line.startswith("Uid:")).split()[1:])
    assert uids == {str(pwd.getpwnam(service.user).pw_uid)}, (unit.name, uids)
    return proc
