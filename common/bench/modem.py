"""``semalign bench modem``: modem throughput on one core and payload goodput through the simulator.

Prints a table (or JSON); the figures are measurements, never assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from common.errors import ConfigError
from common.modulation import Modulation
from common.phy.channel import Channel, ChannelConfig
from common.phy.config import PhyConfig

#: Throughput goal for modulate + demodulate on one core, in samples per second.
GOAL_SAMPLES_PER_S = 4e6
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _one_thread() -> Iterator[str]:
    """Pin BLAS/OpenMP (and torch, if loaded) to one thread; yield how; restore on exit."""
    how: list[str] = []
    saved_env = {var: os.environ.get(var) for var in _THREAD_VARS}
    for var in _THREAD_VARS:  # for libraries initialised from here on
        os.environ[var] = "1"
    torch = sys.modules.get("torch")
    torch_threads = None
    if torch is not None:
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        how.append("torch")
    try:
        with contextlib.ExitStack() as stack:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                how.append("env only (threadpoolctl missing)")
            else:
                stack.enter_context(threadpool_limits(limits=1))
                how.append("threadpoolctl")
            yield ", ".join(how)
    finally:
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        if torch is not None and torch_threads is not None:
            torch.set_num_threads(torch_threads)


def _best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, (time.perf_counter_ns() - t0) / 1e9)
    return best


def _throughput(
    config: PhyConfig, modulations: list[Modulation], payload_bytes: int, repeat: int, seed: int
) -> list[dict[str, Any]]:
    from common.phy.demodulator import Demodulator  # scipy: not for --help
    from common.phy.modulator import Modulator

    rng = np.random.default_rng(seed)
    payload = rng.integers(0, 256, payload_bytes, dtype=np.uint8).tobytes()
    tx, rx = Modulator(config), Demodulator(config)
    rows = []
    for mod in modulations:
        samples = tx(payload, mod, 1)
        # Demodulate a realistic input (noise, CFO, offsets) so every stage does real work.
        channel = Channel(ChannelConfig(snr_db=40.0, cfo=5e-4, timing_offset=0.3,
                                        start_offset=1000, seed=seed,
                                        samples_per_symbol=config.samples_per_symbol))
        received = channel(samples)
        check = rx(received)
        t_mod = _best_of(repeat, functools.partial(tx, payload, mod, 1))
        t_demod = _best_of(repeat, functools.partial(rx, received))
        n = samples.size
        combined = n / (t_mod + t_demod)
        rows.append({
            "modulation": mod.value,
            "samples": n,
            "mod_samples_per_s": n / t_mod,
            "demod_samples_per_s": received.size / t_demod,
            "combined_samples_per_s": combined,
            "goal_met": combined >= GOAL_SAMPLES_PER_S,
            "payload_ok": check.payload == payload and bool(check.valid.all()),
        })
    return rows


def _goodput(
    config: PhyConfig,
    modulations: list[Modulation],
    snrs: list[float],
    payload_bytes: int,
    sample_rate: float,
    fading: str,
    seed: int,
) -> list[dict[str, Any]]:
    from common.phy.demodulator import Demodulator  # scipy: not for --help
    from common.phy.modulator import Modulator

    rng = np.random.default_rng(seed)
    payload = rng.integers(0, 256, payload_bytes, dtype=np.uint8).tobytes()
    reference = np.frombuffer(payload, dtype=np.uint8)
    tx, rx = Modulator(config), Demodulator(config)
    rows = []
    for mod in modulations:
        samples = tx(payload, mod, 2)
        air_time = samples.size / sample_rate
        for snr in snrs:
            channel = Channel(ChannelConfig(
                snr_db=snr, cfo=5e-4, timing_offset=0.4, start_offset=777, pluto=True,
                fading=fading,  # type: ignore[arg-type]  # validated by ChannelConfig
                samples_per_symbol=config.samples_per_symbol, seed=seed,
            ))
            t0 = time.perf_counter_ns()
            result = rx(channel(samples), expected_batch_id=2)
            wall = (time.perf_counter_ns() - t0) / 1e9
            good = int(result.valid.sum())
            corrupt = (
                int(np.sum(result.valid & (np.frombuffer(result.payload, np.uint8) != reference)))
                if result.valid.size == reference.size else 0
            )
            rows.append({
                "modulation": mod.value,
                "snr_db": snr,
                "success_ratio": good / payload_bytes,
                "frames_lost": result.frames_lost,
                "frames_total": result.frames_total,
                "goodput_bytes_per_s_air": good / air_time,
                "goodput_bytes_per_s_wall": good / wall,
                "snr_estimate_db": result.snr_db,
                "corrupt_valid_bytes": corrupt,
            })
    return rows


def _print_tables(report: dict[str, Any]) -> None:
    print(f"modem throughput, one core ({report['threads']}), goal "
          f"{GOAL_SAMPLES_PER_S / 1e6:.1f} MS/s for modulate + demodulate")
    print(f"{'modulation':<10} {'samples':>9} {'mod MS/s':>9} {'demod MS/s':>10} "
          f"{'mod+demod':>10} {'goal':>5} {'ok':>4}")
    for r in report["throughput"]:
        print(f"{r['modulation']:<10} {r['samples']:>9} {r['mod_samples_per_s'] / 1e6:>9.2f} "
              f"{r['demod_samples_per_s'] / 1e6:>10.2f} {r['combined_samples_per_s'] / 1e6:>10.2f} "
              f"{'met' if r['goal_met'] else 'MISS':>5} {'yes' if r['payload_ok'] else 'NO':>4}")
    print()
    print(f"goodput through the simulator (AWGN{'' if report['fading'] == 'none' else ' + ' + report['fading']}"
          f", CFO, timing, Pluto contract), {report['goodput_payload_bytes']} B payload, "
          f"air time at {report['sample_rate'] / 1e6:g} MS/s")
    print(f"{'modulation':<10} {'Es/N0':>6} {'success':>8} {'lost':>9} {'kB/s air':>9} "
          f"{'kB/s wall':>10} {'SNR est':>8} {'corrupt':>8}")
    for r in report["goodput"]:
        print(f"{r['modulation']:<10} {r['snr_db']:>6.1f} {r['success_ratio']:>8.3f} "
              f"{r['frames_lost']:>4}/{r['frames_total']:<4} {r['goodput_bytes_per_s_air'] / 1e3:>9.1f} "
              f"{r['goodput_bytes_per_s_wall'] / 1e3:>10.1f} {r['snr_estimate_db']:>8.1f} "
              f"{r['corrupt_valid_bytes']:>8}")


def bench_modem_main(argv: list[str] | None = None) -> int:
    """Run the modem benchmark; return the process exit code (0 unless arguments are bad)."""
    parser = argparse.ArgumentParser(
        prog="semalign bench modem",
        description="Modem throughput (samples/s, one core) and goodput through the simulator.",
    )
    parser.add_argument("--payload-bytes", type=int, default=256 * 1024,
                        help="payload for the throughput run (default 256 KiB)")
    parser.add_argument("--goodput-bytes", type=int, default=64 * 1024,
                        help="payload per goodput point (default 64 KiB)")
    parser.add_argument("--repeat", type=int, default=3, help="timing runs, best kept")
    parser.add_argument("--snr", default="10,15,20,25,30,35",
                        help="comma-separated Es/N0 points in dB")
    parser.add_argument("--modulations", default=",".join(m.value for m in Modulation))
    parser.add_argument("--fading", choices=("none", "rayleigh", "rician"), default="none")
    parser.add_argument("--sample-rate", type=float, default=2e6,
                        help="sample rate for air-time goodput (default 2 MS/s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    try:
        modulations = [Modulation.parse(m) for m in args.modulations.split(",") if m.strip()]
        snrs = [float(s) for s in args.snr.split(",") if s.strip()]
    except (ValueError, ConfigError) as exc:
        parser.error(f"bad --snr or --modulations list: {exc}")
    if args.payload_bytes < 1 or args.goodput_bytes < 1 or args.repeat < 1:
        parser.error("--payload-bytes, --goodput-bytes and --repeat must be >= 1")
    config = PhyConfig()
    with _one_thread() as threads:
        report: dict[str, Any] = {
            "threads": threads,
            "goal_samples_per_s": GOAL_SAMPLES_PER_S,
            "fading": args.fading,
            "sample_rate": args.sample_rate,
            "goodput_payload_bytes": args.goodput_bytes,
            "throughput": _throughput(config, modulations, args.payload_bytes, args.repeat,
                                      args.seed),
            "goodput": _goodput(config, modulations, snrs, args.goodput_bytes, args.sample_rate,
                                args.fading, args.seed),
        }
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        _print_tables(report)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(bench_modem_main())
