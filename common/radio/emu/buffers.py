"""Open IIO buffers of the emulated Pluto: the ADC's kernel ring and the DAC's queue, in real time.

The ADC's DMA fills ``count`` blocks back to back from the moment the buffer is opened. A
block waits in the ring until the client reads it (``READBUF``); when every block is full
or held by the client the DMA stops and samples are lost (an overflow), so after idle the
first ``count`` reads return old samples. The DAC plays pushed blocks back to back; a push
waits while ``count`` blocks are queued ahead, and a late push leaves a gap (an underflow).
"""

from __future__ import annotations

import collections
import errno
import threading

import numpy as np

from common.errors import IiodError
from common.radio.emu.air import REFERENCE_RX_GAIN_DB, Air, IqArray, Listener, Transmission
from common.radio.emu.devices import DAC_UNDERFLOW, Ad936xState
from common.radio.pluto import ADC_OVERFLOW

#: libiio's (and the kernel's) default number of blocks per buffer.
DEFAULT_BUFFERS = 4


def _columns(mask_bits: list[int]) -> list[int]:
    return [bit for bit in (0, 1) if bit in mask_bits]


class RxBuffer:
    """An open ADC buffer of ``samples`` per block; ``read(deadline)`` returns the next block."""

    def __init__(self, air: Air, listener: Listener, state: Ad936xState, samples: int,
                 channels: list[int], count: int, stop: threading.Event) -> None:
        self.air, self.listener, self.state = air, listener, state
        self.samples, self.columns, self.count = samples, _columns(channels), count
        self.rate = state.sample_rate
        self._stop = stop
        self._fill_start = air.now(self.rate)  # the DMA starts with the buffer
        self._done: collections.deque[int] = collections.deque()
        self._held = False
        self.overflows = 0
        self.blocks_read = 0

    @property
    def sample_bytes(self) -> int:
        return 2 * len(self.columns)

    def _advance(self, now: int) -> bool:
        """Complete every block the DMA finished by ``now``; True if it stalled on a full ring."""
        free = self.count - len(self._done) - int(self._held)
        while free > 0 and self._fill_start + self.samples <= now:
            self._done.append(self._fill_start)
            self._fill_start += self.samples
            free -= 1
        return free == 0

    def read(self, timeout_s: float) -> bytes:
        """The oldest filled block, waiting for one if the ring is empty (``-ETIMEDOUT`` after ``timeout_s``)."""
        now = self.air.now(self.rate)
        stalled = self._advance(now)
        if self._held:
            self._held = False  # the client hands back the block it held: the DMA has room again
            if stalled:
                self._fill_start = now  # samples between the stall and now are gone
                self.overflows += 1
                self.state.flag("rx", ADC_OVERFLOW)
        waited = 0.0
        while not self._done:
            wait = max((self._fill_start + self.samples - self.air.now(self.rate)) / self.rate, 1e-4)
            if timeout_s > 0 and waited + wait > timeout_s:
                if self._stop.wait(max(timeout_s - waited, 0.0)):
                    raise IiodError(errno.EPIPE, "emulator stopping")
                raise IiodError(errno.ETIMEDOUT, f"no block within {timeout_s:g} s")
            if self._stop.wait(wait):
                raise IiodError(errno.EPIPE, "emulator stopping")
            waited += wait
            self._advance(self.air.now(self.rate))
        start = self._done.popleft()
        #: Air sample where the block handed out last begins (diagnostics, tests).
        self.last_start = start
        self._held = True
        self.blocks_read += 1
        with self.state.lock:
            gain = self.state.rx_gain - REFERENCE_RX_GAIN_DB if self.state.gain_mode == "manual" else 0.0
            lo, bw = self.state.rx_lo, self.state.rx_bandwidth
        iq: IqArray = self.air.render(self.listener, self.rate, lo, bw, start, self.samples, gain)
        return np.ascontiguousarray(iq[:, self.columns]).tobytes()


class TxBuffer:
    """An open DAC buffer: ``write(data)`` queues one block of int16 samples on the air."""

    def __init__(self, air: Air, sender: int, state: Ad936xState, samples: int, channels: list[int],
                 count: int, cyclic: bool, repeat_cyclic: bool, stop: threading.Event) -> None:
        self.air, self.sender, self.state = air, sender, state
        self.samples, self.columns, self.count = samples, _columns(channels), count
        self.cyclic, self.repeat_cyclic = cyclic, repeat_cyclic
        self.rate = state.sample_rate
        self._stop = stop
        self._pushed = 0
        self._cyclic_tx: Transmission | None = None
        self.underflows = 0

    @property
    def sample_bytes(self) -> int:
        return 2 * len(self.columns)

    def write(self, data: bytes, timeout_s: float) -> None:
        if self.cyclic and self._pushed:
            raise IiodError(errno.EBUSY, "a cyclic buffer is pushed once")
        raw = np.frombuffer(data, dtype="<i2").reshape(-1, len(self.columns))
        iq = np.zeros((self.samples, 2), dtype=np.int16)
        iq[: raw.shape[0], self.columns] = raw
        now = self.air.now(self.rate)
        queued = self.air.queued_until(self.sender)
        if self._pushed and not self.cyclic and queued < now:
            self.underflows += 1
            self.state.flag("tx", DAC_UNDERFLOW)
        start = max(now, queued)
        # The DMA holds `count` blocks: one playing, the rest queued behind it.
        wait = (start - now - (self.count - 1) * self.samples) / self.rate
        if wait > 0:
            if timeout_s > 0 and wait > timeout_s:
                raise IiodError(errno.ETIMEDOUT, f"DAC queue full for {timeout_s:g} s")
            if self._stop.wait(wait):
                raise IiodError(errno.EPIPE, "emulator stopping")
        with self.state.lock:
            lo, atten = self.state.tx_lo, self.state.tx_atten
        repeat = self.cyclic and self.repeat_cyclic
        tx = self.air.transmit(self.sender, self.rate, lo, start, iq, atten, cyclic=repeat)
        if repeat:
            self._cyclic_tx = tx
        self._pushed += 1

    def close(self) -> None:
        # Disabling the buffer stops the DMA: queued blocks are dropped, a cyclic one ends.
        self.air.silence(self.sender, self.rate, self.air.now(self.rate))
