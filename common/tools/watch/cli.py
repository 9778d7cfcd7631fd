"""``semalign watch [--config ctl.yaml] [--tx ENDPOINT] [--rx ENDPOINT]``: the live dashboard of both
daemons' monitor streams.

With ``--config`` it reads the operator's file that ``semalign ctl`` reads: ``tx_monitor``,
``rx_monitor``, ``tx`` (TX's control endpoint), ``security.key`` (the operator's secret key),
``security.peer`` (TX's public key) and ``rx_peer`` (RX's public key). Flags win.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path

from common.config import load_config
from common.errors import ConfigError
from common.transport.security import SecurityConfig, is_local

#: How the settings are spelled, as a flag and in ctl.yaml, for the error messages.
KEY = "--key (security.key in --config ctl.yaml)"
TX_PEER = "--tx-peer (security.peer in ctl.yaml)"
RX_PEER = "--rx-peer (rx_peer in ctl.yaml)"


@dataclass(frozen=True)
class WatchSettings:
    """What ``semalign watch`` runs with, once flags and ctl.yaml are merged and checked."""

    tx: str
    rx: str | None
    control: str | None
    key: str | None
    tx_peer: str | None
    rx_peer: str | None
    insecure: bool

    def __post_init__(self) -> None:
        for what, endpoint in (("TX's monitor endpoint", self.tx), ("RX's monitor endpoint", self.rx),
                               ("TX's control endpoint", self.control)):
            if endpoint is not None and "://" not in endpoint:
                raise ConfigError(f"{what}: expected an endpoint such as tcp://HOST:PORT, got {endpoint!r}")
        if self.key is None:
            if self.tx_peer or self.rx_peer:
                raise ConfigError(f"a peer's public key was given but not the operator's secret key: {KEY}")
            for role, endpoint in (("TX", self.tx), ("RX", self.rx)):
                if endpoint is not None and not is_local(endpoint) and not self.insecure:
                    raise ConfigError(
                        f"{role}'s monitor {endpoint} is not a loopback address and watch has no key: expected "
                        f"{KEY} with {TX_PEER}" + (f" and {RX_PEER}" if self.rx else "")
                        + " (docs/security.md), or security.insecure: true in ctl.yaml to watch in clear text")
            return
        if self.tx_peer is None:
            raise ConfigError(f"with the operator's key, TX's public key is needed too: {TX_PEER}")
        if self.rx is not None and self.rx_peer is None:
            raise ConfigError(f"with the operator's key, RX's public key is needed too: {RX_PEER}")

    @classmethod
    def merge(cls, args: argparse.Namespace) -> WatchSettings:
        """Flags over ``--config``'s values (ctl.yaml, read as ``semalign ctl`` reads it)."""
        from tx.ctl import CtlConfig

        file = load_config(CtlConfig, args.config) if args.config is not None else None
        tx = args.tx or (file.tx_monitor if file else None)
        if tx is None:
            raise ConfigError("TX's monitor endpoint is needed: --tx ENDPOINT, or tx_monitor: in --config ctl.yaml")
        return cls(
            tx=tx,
            rx=args.rx or (file.rx_monitor if file else None),
            control=args.control or (file.tx if file else None),
            key=args.key or (file.security.key if file else None),
            tx_peer=args.tx_peer or (file.security.peer if file else None),
            rx_peer=args.rx_peer or (file.rx_peer if file else None),
            insecure=file.security.insecure if file else False,
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semalign watch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, metavar="ctl.yaml",
                   help="the operator's file: tx_monitor, rx_monitor, tx, security.key, security.peer, rx_peer")
    p.add_argument("--tx", help="TX's monitor endpoint (its `monitor:` key), e.g. tcp://tx-laptop:5557 "
                   "(ctl.yaml: tx_monitor)")
    p.add_argument("--rx", help="RX's monitor endpoint, e.g. tcp://rx-laptop:5558 (ctl.yaml: rx_monitor)")
    p.add_argument("--control", help="TX's control endpoint (ctl.yaml: tx; default: the one TX announces)")
    p.add_argument("--key", help="the operator's secret key (ctl.yaml: security.key)")
    p.add_argument("--tx-peer", help="TX's public key (ctl.yaml: security.peer)")
    p.add_argument("--rx-peer", help="RX's public key (ctl.yaml: rx_peer)")
    p.add_argument("--screenshot", type=Path, metavar="FILE.svg",
                   help="run without a terminal, save the screen as SVG after --screenshot-after seconds, exit")
    p.add_argument("--screenshot-after", type=float, default=15.0, metavar="S")
    p.add_argument("--size", default="160x50", help="columns x rows of --screenshot")
    return p


def watch_main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    settings = WatchSettings.merge(args)
    cols, _, rows = args.size.partition("x")
    if not (cols.isdigit() and rows.isdigit() and int(cols) >= 20 and int(rows) >= 10):
        raise ConfigError(f"--size: expected COLUMNSxROWS such as 80x24, got {args.size!r}")
    size = (int(cols), int(rows))
    try:
        from common.tools.watch.app import WatchApp, default_control
        from common.tools.watch.source import MonitorSource
    except ImportError as exc:
        raise ConfigError(f"the dashboard needs the monitor extra ({exc.name} is not installed): "
                          "pip install 'semalign[monitor]'") from exc

    endpoints = [settings.tx] + ([settings.rx] if settings.rx else [])
    security = SecurityConfig(key=settings.key, insecure=settings.insecure)
    peers = {settings.tx: settings.tx_peer, **({settings.rx: settings.rx_peer} if settings.rx else {})}
    source = MonitorSource(endpoints, security=security, peers={k: v for k, v in peers.items() if v})
    # TX's control socket is secured with TX's key, as its monitor stream is.
    control_security = SecurityConfig(key=settings.key, peer=settings.tx_peer, insecure=settings.insecure)
    app = WatchApp(source, settings.tx, settings.rx, control_endpoint=settings.control,
                   control=functools.partial(default_control, security=control_security))
    if args.screenshot is None:
        app.run()
        return 0
    app.screenshot_to(args.screenshot, after_s=args.screenshot_after)
    app.run(headless=True, size=size)
    print(args.screenshot)
    return 0
