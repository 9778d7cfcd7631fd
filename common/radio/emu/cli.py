"""``semalign pluto-emu``: emulated ADALM-Plutos on loopback, sharing one real-time air.

One ``--port`` is one Pluto (it hears its own TX, as on a bench cable); two are a link.
Drive them with any libiio client: ``adi.Pluto("ip:127.0.0.1:PORT")``, ``iio_info -u ...``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from common.errors import ConfigError
from common.phy.channel import FADING_KINDS, SnrProfile
from common.radio.emu.air import Air, AirConfig
from common.radio.emu.server import IIOD_PORT, PlutoEmulator


def pluto_emu_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="semalign pluto-emu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: loopback only)")
    p.add_argument("--port", type=int, action="append", help=f"one Pluto per port (default {IIOD_PORT}; 0 = any free)")
    p.add_argument("--snr-db", type=float, default=30.0, help="Es/N0 of a nominal burst at TX gain -10 dB")
    p.add_argument("--snr-profile", help="Es/N0 per burst instead, e.g. '30 dB, drop 6 dB at batch 4'")
    p.add_argument("--cfo", type=float, default=2e-4, help="carrier frequency offset, cycles/sample")
    p.add_argument("--timing-offset", type=float, default=0.3, help="fractional timing offset, samples")
    p.add_argument("--fading", default="none", choices=FADING_KINDS)
    p.add_argument("--rician-k", type=float, default=0.0)
    p.add_argument("--doppler", type=float, default=0.0, help="max Doppler, cycles/sample (fading needs > 0)")
    p.add_argument("--part", default="ad9364", choices=("ad9364", "ad9363"), help="LO range of the emulated part")
    p.add_argument("--no-cyclic-repeat", action="store_true", help="play a cyclic TX buffer once (a device that does not repeat)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    profile = SnrProfile.parse(args.snr_profile) if args.snr_profile else None
    try:
        air = Air(AirConfig(snr_db=args.snr_db, snr_profile=profile, cfo=args.cfo, timing_offset=args.timing_offset,
                            fading=args.fading, rician_k=args.rician_k, doppler=args.doppler, seed=args.seed))
    except ConfigError as exc:
        p.error(str(exc))
    emulators = [PlutoEmulator(air, host=args.host, port=port, part=args.part, name=f"pluto{i}",
                               repeat_cyclic=not args.no_cyclic_repeat)
                 for i, port in enumerate(args.port or [IIOD_PORT])]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        for emu in emulators:
            emu.start()
            print(f"{emu.name} {emu.uri}", flush=True)
        stop.wait()
    except OSError as exc:
        print(f"semalign pluto-emu: cannot serve: {exc}", file=sys.stderr)
        return 1
    finally:
        for emu in emulators:
            emu.stop()
        c = [e.counters for e in emulators]
        print("served: " + "; ".join(f"{e.name} sessions={x.sessions} blocks_read={x.blocks_read} "
                                     f"blocks_written={x.blocks_written} overflows={x.overflows} "
                                     f"underflows={x.underflows} bad_sessions={x.bad_sessions}"
                                     for e, x in zip(emulators, c, strict=True)), flush=True)
    return 0
