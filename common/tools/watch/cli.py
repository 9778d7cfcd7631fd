"""``semalign watch --tx ENDPOINT [--rx ENDPOINT]``: the live dashboard of both daemons' monitor streams."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from common.errors import ConfigError
from common.transport.security import SecurityConfig


def _require_monitor_extra() -> None:
    """ConfigError naming the pip command when the ``monitor`` extra (textual) is not installed."""
    try:
        import textual  # noqa: F401
        import textual_plotext  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"the dashboard needs the monitor extra ({exc.name} is not installed): "
                          "pip install 'semalign[monitor]'") from exc


def watch_main(argv: list[str]) -> int:
    _require_monitor_extra()
    p = argparse.ArgumentParser(prog="semalign watch", description=__doc__)
    p.add_argument("--tx", required=True, help="TX's monitor endpoint (its `monitor:` key), e.g. tcp://tx-laptop:5557")
    p.add_argument("--rx", help="RX's monitor endpoint, e.g. tcp://rx-laptop:5558")
    p.add_argument("--control", help="TX's control endpoint (default: the one TX announces on its stream)")
    p.add_argument("--key", help="this operator's secret certificate, for authenticated monitor streams")
    p.add_argument("--tx-peer", help="TX's public certificate (with --key)")
    p.add_argument("--rx-peer", help="RX's public certificate (with --key)")
    p.add_argument("--screenshot", type=Path, metavar="FILE.svg",
                   help="run without a terminal, save the screen as SVG after --screenshot-after seconds, exit")
    p.add_argument("--screenshot-after", type=float, default=15.0, metavar="S")
    p.add_argument("--size", default="160x50", help="columns x rows of --screenshot")
    args = p.parse_args(argv)
    from common.tools.watch.app import WatchApp, default_control
    from common.tools.watch.source import MonitorSource

    endpoints = [args.tx] + ([args.rx] if args.rx else [])
    security = SecurityConfig(key=args.key) if args.key else SecurityConfig()
    peers = {args.tx: args.tx_peer, **({args.rx: args.rx_peer} if args.rx else {})}
    source = MonitorSource(endpoints, security=security, peers={k: v for k, v in peers.items() if v})
    # TX's control socket is secured with TX's key, as its monitor stream is.
    control_security = SecurityConfig(key=args.key, peer=args.tx_peer) if args.key else None
    app = WatchApp(source, args.tx, args.rx, control_endpoint=args.control,
                   control=functools.partial(default_control, security=control_security))
    if args.screenshot is None:
        app.run()
        return 0
    cols, _, rows = args.size.partition("x")
    app.screenshot_to(args.screenshot, after_s=args.screenshot_after)
    app.run(headless=True, size=(int(cols), int(rows)))
    print(args.screenshot)
    return 0
