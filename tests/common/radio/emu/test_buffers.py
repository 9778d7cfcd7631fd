"""The ADC's kernel ring and the DAC's queue, in real time on a fast clock (1 MS/s, 1 ms blocks)."""

from __future__ import annotations

import errno
import threading
import time

import numpy as np
import pytest

from common.errors import IiodError
from common.radio.emu.air import Air, AirConfig
from common.radio.emu.buffers import RxBuffer, TxBuffer
from common.radio.emu.devices import Ad936xState
from common.radio.pluto import ADC_OVERFLOW, STATUS_REG

RATE = 1_000_000
BLOCK = 1000


def _rx(air: Air, count: int = 4, samples: int = BLOCK) -> tuple[RxBuffer, Ad936xState]:
    state = Ad936xState()
    state.sample_rate = RATE
    return RxBuffer(air, air.listener(), state, samples, [0, 1], count, threading.Event()), state


def test_after_idle_the_ring_returns_stale_blocks_then_fresh_ones() -> None:
    now = [0.0]  # the air's clock, moved by hand: 1 ms blocks leave no room for a stalled host
    air = Air(AirConfig(snr_db=30.0), clock=lambda: now[0])
    buf, state = _rx(air)
    now[0] = 0.03  # 30 blocks' worth of idle: the ring filled with the first 4, then stalled
    t_first = air.now(RATE)
    starts = []
    for i in range(6):
        if i >= 4:
            now[0] += BLOCK / RATE  # one more block's worth of air for each fresh read
        assert len(buf.read(1.0)) == BLOCK * 4
        starts.append(buf.last_start)
    assert starts[:4] == [i * BLOCK for i in range(4)]  # captured right after the open: stale
    assert starts[4] == t_first  # the DMA resumed when the first stale block was handed back
    assert starts[5] == starts[4] + BLOCK  # then back to back
    assert buf.overflows == 1
    state.reg_write("rx", hex(STATUS_REG))
    assert int(state.reg_read("rx"), 16) & ADC_OVERFLOW


def test_a_reader_that_keeps_up_sees_contiguous_blocks() -> None:
    air = Air()
    buf, _ = _rx(air, samples=50_000)  # 50 ms blocks: 200 ms of ring, room for a loaded host
    starts = []
    for _ in range(6):
        buf.read(1.0)
        starts.append(buf.last_start)
    assert np.all(np.diff(starts) == 50_000) and buf.overflows == 0


def test_a_block_longer_than_the_timeout_times_out() -> None:
    buf, _ = _rx(Air(), samples=200_000)  # 0.2 s per block
    t0 = time.monotonic()
    with pytest.raises(IiodError) as info:
        buf.read(0.05)
    assert info.value.errno == errno.ETIMEDOUT
    assert 0.04 < time.monotonic() - t0 < 0.5


def test_dac_queue_blocks_while_full_and_counts_gaps() -> None:
    now = [0.0]  # the air's clock, moved by hand: only the pushes' own waits take real time
    air = Air(clock=lambda: now[0])
    state = Ad936xState()
    state.sample_rate = RATE
    sender = air.new_id()
    tx = TxBuffer(air, sender, state, 10_000, [0, 1], 4, False, True, threading.Event())
    block = np.zeros((10_000, 2), dtype="<i2").tobytes()
    t0 = time.monotonic()
    for _ in range(6):  # 6 x 10 ms: the 5th and 6th push wait for room (3 queued behind one playing)
        tx.write(block, 1.0)
    assert time.monotonic() - t0 > 0.025  # waits of 10 ms, then 20 ms
    assert tx.underflows == 0 and air.queued_until(sender) == 60_000
    now[0] = 0.08  # the host is late: the queue ran dry at 60 ms
    tx.write(block, 1.0)
    assert tx.underflows == 1


def test_signal_arrives_where_it_was_sent_and_stops_at_close() -> None:
    air = Air(AirConfig(snr_db=40.0))
    state = Ad936xState()
    state.sample_rate = RATE
    state.tx_lo = state.rx_lo
    rx, _ = _rx(air, samples=20_000)
    tx = TxBuffer(air, air.new_id(), state, 20_000, [0, 1], 4, True, True, threading.Event())
    tone = np.zeros((20_000, 2), dtype="<i2")
    tone[:, 0] = 8000
    tx.write(tone.tobytes(), 1.0)
    levels = [np.abs(np.frombuffer(rx.read(1.0), "<i2")).mean() for _ in range(6)]
    tx.close()
    time.sleep(0.05)
    after = [np.abs(np.frombuffer(rx.read(1.0), "<i2")).mean() for _ in range(6)]
    assert max(levels[-3:]) > 20 * max(after[-2:])  # a repeated cyclic tone, then silence
