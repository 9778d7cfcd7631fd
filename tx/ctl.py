"""``semalign ctl``: send one control command to a running TX daemon and print its reply.

A Lazy Pirate client: poll with a timeout, a fresh socket per try, bounded tries. With a
``security:`` section (``--config``) or ``--security-*`` flags it speaks CURVE to TX.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import add_config_flags, flag_values, load_config
from common.errors import ConfigError, HandshakeRefused, TransportError
from common.transport.security import SecurityConfig, secure_client
from common.wire.messages import MAX_META_BYTES
from tx.control import COMMANDS, MAX_INT_ARG, TABLE, Arg, ControlRequest, decode_reply

REQUEST_TIMEOUT_S = 3.0
REQUEST_TRIES = 3
#: How often a try looks at the handshake monitor while it waits for the reply.
REFUSAL_CHECK_MS = 100

#: Exit codes: TX answered no (1), bad arguments (2), no reply (3), TX refused our key (4).
EXIT_NO_REPLY = 3
EXIT_REFUSED = 4


@dataclass(frozen=True)
class CtlConfig:
    """What ``semalign ctl --config FILE`` and ``semalign watch --config FILE`` read: where TX and
    RX are and the operator's keys."""

    #: TX control endpoint.
    tx: str = "tcp://127.0.0.1:5556"
    #: CURVE keys (docs/security.md): key = the operator's secret certificate, peer = TX's public one.
    security: SecurityConfig = field(default_factory=SecurityConfig)
    #: TX's monitor endpoint (its `monitor:` key), for `semalign watch`.
    tx_monitor: str | None = None
    #: RX's monitor endpoint, for `semalign watch`.
    rx_monitor: str | None = None
    #: RX's public certificate: `semalign watch` meets RX's monitor with the operator's key and this.
    rx_peer: str | None = None


def request(endpoint: str, req: ControlRequest, *, timeout_s: float = REQUEST_TIMEOUT_S,
            tries: int = REQUEST_TRIES, security: SecurityConfig | None = None) -> dict[str, Any]:
    """Send ``req`` to TX's control endpoint and return its decoded reply.

    ``HandshakeRefused`` as soon as TX refuses our CURVE key (no point in trying again),
    ``TransportError`` when no reply came in ``tries`` tries.
    """
    import zmq  # here, not at the top: ``semalign ctl --help`` and argument errors stay light

    from common.transport.zmq import HandshakeWatch, make_socket

    frame = req.encode()  # ConfigError for an argument that cannot travel, before any socket
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    for _ in range(tries):
        sock = make_socket(ctx, zmq.REQ, max_msg=2 * MAX_META_BYTES, rcvhwm=2)
        watch = None
        try:
            if secure_client(sock, security or SecurityConfig(), endpoint=endpoint):
                watch = HandshakeWatch(sock)
            sock.connect(endpoint)
            sock.send(frame)
            for _ in range(max(1, int(timeout_s * 1000) // REFUSAL_CHECK_MS)):
                if sock.poll(REFUSAL_CHECK_MS):
                    return decode_reply(sock.recv())
                if watch is not None and (refused := watch.poll()) is not None:
                    raise HandshakeRefused(f"{refused} ({endpoint})")
        finally:
            if watch is not None:
                watch.close()
            sock.close(0)
    raise TransportError(f"no reply from TX control endpoint {endpoint} after {tries} tries of {timeout_s:g} s")


def format_reply(reply: dict[str, Any]) -> str:
    if not reply["ok"]:
        return f"error: {reply.get('error')}"
    lines = []
    if reply.get("message"):
        lines.append(str(reply["message"]))
    for key in ("plan", "status"):
        if isinstance(reply.get(key), dict):
            lines.extend(f"  {k}: {v}" for k, v in reply[key].items() if k != "receivers")
    receivers = reply.get("receivers")
    # One receiver's reply is the one printed above; several each get a block.
    if isinstance(receivers, dict) and len(receivers) > 1:
        for name, each in receivers.items():
            lines.append(f"receiver {name}:")
            if isinstance(each, dict):
                lines.extend(f"  {k}: {v}" for k, v in each.items())
    return "\n".join(lines)


def _usage(name: str) -> str:
    return f"{name} [{TABLE[name].metavar}]" if TABLE[name].arg is Arg.OPTIONAL else \
        f"{name} {TABLE[name].metavar}".rstrip()


def _epilog() -> str:
    width = max(len(_usage(name)) for name in TABLE)
    return "commands:\n" + "\n".join(f"  {_usage(name):<{width}}  {c.help}" for name, c in TABLE.items())


def _arg_help() -> str:
    """"modulation name, alpha, ..., or the alpha to reset-adapter (default all)": the table's, in its order."""
    each = [c.arg_help for c in TABLE.values() if c.arg_help]
    return ", ".join(each[:-1]) + ", or " + each[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semalign ctl", description="Control a running TX daemon.",
                                     epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML file with tx: and a security: section; flags win")
    add_config_flags(parser, CtlConfig)
    parser.add_argument("--json", action="store_true", help="print the raw reply as JSON")
    parser.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT_S, help="seconds per try")
    parser.add_argument("--rx", metavar="NAME", help="the receiver (its receivers: name) the command is for; "
                        "default: every receiver")
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("arg", nargs="?", help=_arg_help())
    args = parser.parse_args(argv)
    values = flag_values(args)
    config = load_config(CtlConfig, values.pop("config", None),
                         {k: v for k, v in values.items() if k in ("tx", "security")})
    kind = TABLE[args.command].arg
    arg: str | int | None = args.arg
    if kind is Arg.ALPHA and args.arg is not None:
        try:
            arg = int(args.arg)
        except ValueError:
            parser.error(f"{args.command} expects an integer, got {args.arg!r}")
        if not 1 <= arg <= MAX_INT_ARG:
            parser.error(f"{args.command} expects an alpha in 1..{MAX_INT_ARG} (TX checks it against its bundle), "
                         f"got {args.arg}")
    if kind in (Arg.REQUIRED, Arg.ALPHA) and arg is None:
        parser.error(f"{args.command} needs an argument")
    try:
        reply = request(config.tx, ControlRequest(args.command, arg, rx=args.rx), timeout_s=args.timeout,
                        security=config.security)
    except HandshakeRefused as exc:
        print(f"semalign ctl: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except TransportError as exc:
        print(f"semalign ctl: {exc}", file=sys.stderr)
        return EXIT_NO_REPLY
    except ConfigError as exc:
        print(f"semalign ctl: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(reply, indent=2, default=str) if args.json else format_reply(reply))
    return 0 if reply["ok"] else 1
