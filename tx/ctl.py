"""``semalign ctl``: send one control command to a running TX daemon and print its reply.

A Lazy Pirate client: poll with a timeout, a fresh socket per try, bounded tries.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import zmq

from common.errors import TransportError
from common.transport.zmq import make_socket
from tx.control import COMMANDS, ControlRequest, decode_reply

REQUEST_TIMEOUT_S = 3.0
REQUEST_TRIES = 3


def request(endpoint: str, req: ControlRequest, *, timeout_s: float = REQUEST_TIMEOUT_S,
            tries: int = REQUEST_TRIES) -> dict[str, Any]:
    """Send ``req`` to TX's control endpoint and return its decoded reply."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    for _ in range(tries):
        sock = make_socket(ctx, zmq.REQ)
        try:
            sock.connect(endpoint)
            sock.send(req.encode())
            if sock.poll(int(timeout_s * 1000)):
                return decode_reply(sock.recv())
        finally:
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
            lines.extend(f"  {k}: {v}" for k, v in reply[key].items())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semalign ctl", description="Control a running TX daemon.")
    parser.add_argument("--tx", default="tcp://127.0.0.1:5556", help="TX control endpoint")
    parser.add_argument("--json", action="store_true", help="print the raw reply as JSON")
    parser.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT_S, help="seconds per try")
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("arg", nargs="?", help="modulation name, alpha, policy, or on/off for amc")
    args = parser.parse_args(argv)
    arg: str | int | None = args.arg
    if args.command == "set-alpha" and args.arg is not None:
        try:
            arg = int(args.arg)
        except ValueError:
            parser.error(f"set-alpha expects an integer, got {args.arg!r}")
    if args.command in ("set-modulation", "set-alpha", "set-policy", "amc") and arg is None:
        parser.error(f"{args.command} needs an argument")
    try:
        reply = request(args.tx, ControlRequest(args.command, arg), timeout_s=args.timeout)
    except TransportError as exc:
        print(f"semalign ctl: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(reply, indent=2, default=str) if args.json else format_reply(reply))
    return 0 if reply["ok"] else 1
