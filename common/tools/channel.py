"""``semalign channel``: the simulated radio between TX and RX, as a process of its own.

TX connects to it as if it were RX; it passes each batch's baseband samples through the
channel simulator (SNR from a profile indexed by batch, fading, CFO, timing, Pluto contract)
and forwards them to RX. Metadata-only messages and RX's replies pass through unchanged.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import zmq

from common.errors import ProtocolError, SemalignError
from common.log import configure, get_logger
from common.runtime import StopFlag
from common.transport.base import Transport
from common.transport.zmq import bind_endpoint, make_socket
from common.wire import messages

if TYPE_CHECKING:
    from common.phy import ChannelConfig, SnrProfile

log = get_logger("semalign.channel")

POLL_MS = 100
#: Largest sample frame accepted (complex64): 64 MiB, 8M samples.
MAX_SAMPLE_BYTES = 64 * 1024 * 1024


class ChannelProcess:
    def __init__(self, listen: str, forward: str, profile: SnrProfile, config: ChannelConfig,
                 *, ctx: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        self._ctx = ctx or zmq.Context.instance()
        self.profile = profile
        from common.phy import Channel

        self.channel = Channel(config)
        self.front = make_socket(self._ctx, zmq.ROUTER, max_msg=MAX_SAMPLE_BYTES + messages.MAX_META_BYTES)
        bind_endpoint(self.front, listen, "listen")
        self.back = make_socket(self._ctx, zmq.DEALER)
        self.back.connect(forward)
        self.listen = self.front.getsockopt_string(zmq.LAST_ENDPOINT)
        self.forward = forward
        self.counters: Counter[str] = Counter()
        self._tx_identity: bytes | None = None

    def close(self) -> None:
        self.front.close(0)
        self.back.close(0)

    def run(self, stop: StopFlag) -> None:
        log.info("channel_ready", listen=self.listen, forward=self.forward)
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        while not stop:
            events = dict(poller.poll(POLL_MS))
            if self.front in events:
                frames = self.front.recv_multipart()
                self._tx_identity = frames[0]
                try:
                    out = self.impair(frames[1:])
                except (ProtocolError, SemalignError, ValueError) as exc:
                    # A simulator drops what it cannot carry, like a radio would.
                    self.counters["dropped"] += 1
                    log.warning("channel_dropped", detail=str(exc))
                    continue
                try:
                    self.back.send_multipart(out, flags=zmq.NOBLOCK)
                except zmq.Again:
                    self.counters["rx_unreachable"] += 1
            if self.back in events:
                reply = self.back.recv_multipart()
                if self._tx_identity is not None:
                    self.front.send_multipart([self._tx_identity, *reply])
        log.info("channel_stopped", counters=dict(self.counters))

    def impair(self, frames: list[bytes]) -> list[bytes]:
        """Pass a batch's samples through the channel; forward anything else as it is."""
        if len(frames) != 2:
            return frames
        meta = messages.unpack(frames[0])
        if meta.get("kind") != messages.KIND_BATCH or meta.get("transport") != Transport.SIM:
            return frames
        env = messages.Envelope.decode(meta)
        if len(frames[1]) % 8 or len(frames[1]) > MAX_SAMPLE_BYTES:
            raise ProtocolError(f"sample frame of {len(frames[1])} bytes is not a valid complex64 burst")
        samples = np.frombuffer(frames[1], dtype=np.complex64)
        snr_db = self.profile.snr_at(env.batch_id)
        out = self.channel(samples, snr_db=snr_db)
        self.counters["batches"] += 1
        log.info("channel_batch", batch=env.batch_id, attempt=env.attempt, modulation=env.modulation,
                 snr_db=snr_db, samples_in=samples.size, samples_out=out.size)
        return [frames[0], np.ascontiguousarray(out, dtype=np.complex64).tobytes()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="semalign channel", description=__doc__)
    p.add_argument("--listen", required=True, help="endpoint TX connects to (bound here)")
    p.add_argument("--forward", required=True, help="RX's data endpoint")
    p.add_argument("--snr-profile", default="30 dB",
                   help='Es/N0 by batch: "30 dB", "36 dB, drop 6 dB at batch 5", or a trace file')
    p.add_argument("--fading", default="none", choices=("none", "rayleigh", "rician"))
    p.add_argument("--rician-k", type=float, default=0.0)
    p.add_argument("--doppler", type=float, default=0.0, help="cycles/sample (> 0: time-varying fading)")
    p.add_argument("--cfo", type=float, default=1e-4, help="carrier frequency offset, cycles/sample")
    p.add_argument("--timing-offset", type=float, default=0.37, help="fractional sample offset in [0, 1)")
    p.add_argument("--start-offset", type=int, default=1000, help="leading noise samples")
    p.add_argument("--no-pluto-contract", action="store_true", help="skip int16 TX / 12-bit RX quantisation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    configure(args.log_level)
    from pathlib import Path

    from common.phy import ChannelConfig, SnrProfile

    profile = (SnrProfile.from_file(args.snr_profile) if Path(args.snr_profile).is_file()
               else SnrProfile.parse(args.snr_profile))
    config = ChannelConfig(
        snr_db=profile.snr_at(0), fading=args.fading, rician_k=args.rician_k, doppler=args.doppler,
        cfo=args.cfo, timing_offset=args.timing_offset, start_offset=args.start_offset,
        pluto=not args.no_pluto_contract, seed=args.seed,
    )
    stop = StopFlag().install()
    proc = ChannelProcess(args.listen, args.forward, profile, config)
    try:
        proc.run(stop)
    finally:
        proc.close()
    return 0
