"""``semalign bench air``: the modem over the emulated air, and what the emulator itself costs.

Goodput per modulation through real libiio to an emulated Pluto's loopback air, and the
emulator's CPU per MS/s of ADC streaming (it runs as its own process, measured from /proc).
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from common.modulation import Modulation
from common.radio.emu.air import Air, AirConfig
from common.radio.emu.server import PlutoEmulator
from common.radio.pluto import PlutoConfig, PlutoRadio
from common.runtime import free_tcp_port, spawn_cli, stop_process


def goodput(snr_db: float, payload_bytes: int, rate: int, seed: int) -> list[dict[str, float | str]]:
    rows: list[dict[str, float | str]] = []
    payload = np.random.default_rng(seed).integers(0, 256, payload_bytes, dtype=np.uint8).tobytes()
    from common.radio.loopback import loopback  # the demodulator's scipy: not for --help

    with PlutoEmulator(Air(AirConfig(snr_db=snr_db, cfo=2e-4, timing_offset=0.3, seed=seed))) as emu, \
            PlutoRadio(PlutoConfig(uri=emu.uri, sample_rate_hz=rate, rf_bandwidth_hz=rate)) as radio:
        for i, modulation in enumerate(Modulation):
            t0 = time.monotonic()
            run = loopback(radio, payload, modulation, batch_id=i)
            wall = time.monotonic() - t0
            result = run.result
            valid = int(result.valid.sum())
            air_s = run.burst_samples / rate
            rows.append({"modulation": modulation.value, "burst_s": air_s, "valid_bytes": valid,
                         "frames_lost": result.frames_lost, "snr_db": result.snr_db,
                         "goodput_kbit_s": 8 * valid / air_s / 1e3, "wall_s": wall,
                         "overflowed": {None: "?", False: "no", True: "yes"}[run.overflowed]})
    return rows


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def emulator_cpu(rates: list[int], seconds: float) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = []
    port = free_tcp_port()
    log = Path(tempfile.mkdtemp(prefix="semalign-air-")) / "pluto-emu.log"
    proc = spawn_cli(["pluto-emu", "--port", str(port)], log)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        for rate in rates:
            cfg = PlutoConfig(uri=f"ip:127.0.0.1:{port}", sample_rate_hz=rate, rf_bandwidth_hz=min(rate, 56_000_000))
            with PlutoRadio(cfg) as radio:
                radio.flush()
                blocks = max(1, int(seconds * rate / cfg.rx_buffer_size))
                c0, t0 = _cpu_s(proc.pid), time.monotonic()
                for _ in range(blocks):
                    radio.receive(cfg.rx_buffer_size, flush=False)
                wall, cpu = time.monotonic() - t0, _cpu_s(proc.pid) - c0
            streamed = blocks * cfg.rx_buffer_size
            rows.append({"rate_msps": rate / 1e6, "wall_s": wall, "air_s": streamed / rate,
                         "kept_up": float(wall < 1.05 * streamed / rate + 0.05),
                         "cpu_per_s": cpu / wall, "cpu_per_msps": cpu / wall / (rate / 1e6)})
    finally:
        stop_process(proc)
    return rows


def bench_air_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="semalign bench air", description=__doc__)
    p.add_argument("--snr-db", type=float, default=36.0)
    p.add_argument("--payload-bytes", type=int, default=40_000)
    p.add_argument("--rate", type=int, default=2_000_000)
    p.add_argument("--cpu-rates", default="1e6,2e6,4e6")
    p.add_argument("--cpu-seconds", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(f"goodput over the emulated air, Es/N0 {args.snr_db:g} dB, {args.payload_bytes} B payload, "
          f"{args.rate / 1e6:g} MS/s (libiio loopback through one emulated Pluto)")
    print(f"{'mod':>8} {'burst s':>8} {'valid B':>8} {'fr.lost':>7} {'SNR dB':>7} {'kbit/s':>8} {'wall s':>7} "
          f"{'overflow':>8}")
    for r in goodput(args.snr_db, args.payload_bytes, args.rate, args.seed):
        print(f"{r['modulation']:>8} {r['burst_s']:8.4f} {r['valid_bytes']:8} {r['frames_lost']:7} "
              f"{r['snr_db']:7.1f} {r['goodput_kbit_s']:8.1f} {r['wall_s']:7.2f} {r['overflowed']:>8}")
    print("\nemulator CPU while one client streams its ADC (process CPU time / wall time)")
    print(f"{'MS/s':>6} {'air s':>6} {'wall s':>7} {'kept up':>7} {'CPU s/s':>8} {'CPU per MS/s':>12}")
    for c in emulator_cpu([int(float(x)) for x in args.cpu_rates.split(",")], args.cpu_seconds):
        print(f"{c['rate_msps']:6g} {c['air_s']:6.2f} {c['wall_s']:7.2f} {'yes' if c['kept_up'] else 'no':>7} "
              f"{c['cpu_per_s']:8.3f} {c['cpu_per_msps']:12.3f}")
    return 0
