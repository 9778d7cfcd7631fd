"""CURVE with ZAP on any ZeroMQ socket (Ironhouse): key files, allow-lists, the loopback rule.

The one module that knows ``zmq.auth``. Call ``secure_server`` on a socket before ``bind``
and ``secure_client`` before ``connect``; docs/security.md says which key file goes where.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import ConfigError
from common.log import get_logger
from common.transport.endpoint import check_endpoint

if TYPE_CHECKING:
    import zmq

log = get_logger("semalign.security")

#: Suffixes ``zmq.auth.create_certificates`` gives the two halves of a certificate.
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


@dataclass(frozen=True)
class SecurityConfig:
    """The ``security:`` section of a config: this end's key pair and whom it lets in.

    Without ``key`` a socket is plain, which is allowed on loopback (and ipc/inproc) only,
    unless ``insecure`` is set.
    """

    #: This end's secret certificate (`semalign keygen NAME --out DIR` writes DIR/NAME.key_secret).
    key: str | None = None
    #: The public certificate of the server this end connects to (RX's for TX, TX's for ctl).
    peer: str | None = None
    #: Directory of the public certificates (*.key) allowed to connect to the sockets this end binds.
    allow: str | None = None
    #: Run plain (unauthenticated, unencrypted) sockets on non-loopback addresses; logged loudly.
    insecure: bool = False

    @property
    def enabled(self) -> bool:
        return self.key is not None


def is_local(endpoint: str) -> bool:
    """Whether ``endpoint`` stays on this host: ipc, inproc, or tcp on a loopback address."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(";", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname, an interface name or the wildcard "*"


def _check_plain(security: SecurityConfig, endpoint: str, role: str) -> None:
    if is_local(endpoint):
        return
    if not security.insecure:
        raise ConfigError(
            f"{role} {endpoint} is not a loopback address and no security.key is set: expected "
            "a key pair (semalign keygen NAME --out DIR; see docs/security.md), or security.insecure: "
            "true to run in clear text"
        )
    log.warning("insecure_socket", endpoint=endpoint, role=role,
                detail="CURVE is off: anyone on the network can connect, read and forge messages")


def load_keypair(path: str, what: str) -> tuple[bytes, bytes | None]:
    """The (public, secret) keys of a certificate file; secret is None for a public one."""
    import zmq.auth

    file = Path(path).expanduser()
    try:
        public, secret = zmq.auth.load_certificate(file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what}: cannot read certificate {file}: {exc}") from exc
    return public, secret


def _secret(security: SecurityConfig) -> tuple[bytes, bytes]:
    assert security.key is not None
    public, secret = load_keypair(security.key, "security.key")
    if secret is None:
        raise ConfigError(f"security.key: {security.key} is a public certificate; expected the "
                          f"secret one ({SECRET_SUFFIX})")
    return public, secret


_guards: dict[int, Any] = {}
_guards_lock = threading.Lock()


def _guard_class() -> type[Any]:
    from zmq.auth.thread import ThreadAuthenticator

    class ZapGuard(ThreadAuthenticator):
        """The context's ZAP handler: checks client keys against each domain's allow-list, counts refusals."""

        def __init__(self, ctx: zmq.Context[Any]) -> None:
            super().__init__(ctx)
            self.refused: Counter[str] = Counter()
            self.users = 0
            self._domain = ""

        async def handle_zap_message(self, msg: list[bytes]) -> None:
            # ZAP request: [version, request id, domain, address, identity, mechanism, ...];
            # one at a time, on the authenticator's thread.
            self._domain = msg[2].decode(errors="replace") if len(msg) > 2 else ""
            self._address = msg[3].decode(errors="replace") if len(msg) > 3 else ""
            await super().handle_zap_message(msg)

        def _send_zap_reply(self, request_id: bytes, status_code: bytes, status_text: bytes,
                            user_id: str = "anonymous") -> None:
            if status_code != b"200":
                self.refused[self._domain] += 1
                log.warning("peer_refused", domain=self._domain, address=self._address,
                            reason=status_text.decode(errors="replace"))
            super()._send_zap_reply(request_id, status_code, status_text, user_id)

    return ZapGuard


class ServerSecurity:
    """What ``secure_server`` set up on one socket; ``refused`` counts clients turned away."""

    def __init__(self, ctx_id: int, guard: Any, domain: str) -> None:
        self._ctx_id = ctx_id
        self._guard = guard
        self.domain = domain
        self._released = False

    @property
    def refused(self) -> int:
        return int(self._guard.refused[self.domain])

    def release(self) -> None:
        """The socket is closed: stop the context's authenticator once no socket uses it."""
        if self._released:
            return
        self._released = True
        with _guards_lock:
            self._guard.users -= 1
            if self._guard.users == 0:
                _guards.pop(self._ctx_id, None)
                self._guard.stop()


def secure_server(sock: zmq.Socket[Any], security: SecurityConfig, *, endpoint: str,
                  domain: str) -> ServerSecurity | None:
    """Make ``sock`` a CURVE server that admits only keys in ``security.allow``; call before ``bind``.

    ``domain`` names the socket's allow-list in the context's one ZAP handler (data,
    control, monitor). Returns None for a plain socket (refused off loopback unless insecure).
    """
    import zmq

    check_endpoint(endpoint, f"{domain} endpoint")
    if not security.enabled:
        _check_plain(security, endpoint, "binding")
        return None
    public, secret = _secret(security)
    if security.allow is None:
        raise ConfigError("security.allow: a socket that others connect to needs a directory of "
                          "allowed public certificates, got none")
    allow = Path(security.allow).expanduser()
    if not allow.is_dir() or not any(allow.glob(f"*{PUBLIC_SUFFIX}")):
        raise ConfigError(f"security.allow: expected a directory holding at least one public "
                          f"certificate (*{PUBLIC_SUFFIX}), got {allow}")
    ctx = sock.context
    with _guards_lock:
        guard = _guards.get(id(ctx))
        if guard is None:
            guard = _guards[id(ctx)] = _guard_class()(ctx)
            guard.start()  # before any bind: a handshake without ZAP would be let through
        guard.users += 1
        guard.configure_curve(domain=domain, location=str(allow))
    try:
        sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True
    except zmq.ZMQError as exc:
        raise ConfigError(f"cannot enable CURVE on {endpoint}: {exc}") from exc
    return ServerSecurity(id(ctx), guard, domain)


def secure_client(sock: zmq.Socket[Any], security: SecurityConfig, *, endpoint: str) -> bool:
    """Make ``sock`` a CURVE client of the server whose public key is ``security.peer``; before ``connect``.

    Returns False for a plain socket (refused off loopback unless insecure).
    """
    import zmq

    check_endpoint(endpoint, "peer endpoint")
    if not security.enabled:
        _check_plain(security, endpoint, "connecting to")
        return False
    public, secret = _secret(security)
    if security.peer is None:
        raise ConfigError(f"security.peer: connecting to {endpoint} needs the server's public "
                          "certificate, got none")
    server, _ = load_keypair(security.peer, "security.peer")
    try:
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_serverkey = server
    except zmq.ZMQError as exc:
        raise ConfigError(f"cannot enable CURVE towards {endpoint}: {exc}") from exc
    return True


def keygen(name: str, out: str | Path) -> tuple[Path, Path]:
    """Write NAME.key (public: give it to peers) and NAME.key_secret (keep it) into ``out``."""
    import zmq.auth

    directory = Path(out).expanduser()
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"keygen: expected a plain name such as tx or operator, got {name!r}")
    public = directory / f"{name}{PUBLIC_SUFFIX}"
    secret = directory / f"{name}{SECRET_SUFFIX}"
    for path in (public, secret):
        if path.exists():
            raise ConfigError(f"keygen: {path} exists; remove it first (a new key locks out every peer "
                              "that holds the old public one)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o077)
        try:
            zmq.auth.create_certificates(str(directory), name)
        finally:
            os.umask(old)
        secret.chmod(0o600)
        public.chmod(0o644)
    except OSError as exc:
        raise ConfigError(f"keygen: cannot write into {directory}: {exc}") from exc
    return public, secret


def keygen_main(argv: list[str]) -> int:
    """``semalign keygen NAME --out DIR``."""
    import argparse

    parser = argparse.ArgumentParser(prog="semalign keygen",
                                     description="Write a CURVE certificate pair (docs/security.md).")
    parser.add_argument("name", help="whose keys: tx, rx, or an operator's name")
    parser.add_argument("--out", required=True, help="directory to write NAME.key and NAME.key_secret into")
    args = parser.parse_args(argv)
    public, secret = keygen(args.name, args.out)
    print(f"public: {public}   (copy to the peers: into their security.allow directory, or as their security.peer)")
    print(f"secret: {secret}   (stays on this machine: this end's security.key)")
    return 0
