"""The transport seam: how a batch's payload travels from TX to RX, behind one ``Bearer``.

Every batch message is ``[envelope, frame]`` on a ``Wire`` (ZeroMQ between the daemons,
or its in-memory twin). A ``Bearer`` decides what the frame holds and how the payload
comes out at the far end: payload bytes as they are (zmq), baseband samples through a
simulated channel (sim), nothing at all while the samples go over the air (pluto).

    TX:  bearer.send(wire, envelope, payload)    -> Sent        (puts [envelope, frame] on the wire)
    RX:  bearer.receive(envelope, frame, notify) -> Received    (payload bytes, validity mask, PHY report)

Daemons hold bearers and never ask which one; ``BEARERS`` with ``open_bearer`` and
``open_receivers`` below are the only code that reads the transport setting.
"""

from __future__ import annotations

import abc
import enum
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from common.phy.config import PhyConfig
from common.wire.messages import AirReady, Envelope

if TYPE_CHECKING:
    from common.phy.demodulator import PhyResult
    from common.radio.pluto import PlutoConfig


class Transport(enum.StrEnum):
    """How the payload of a batch travels; the envelope always rides the wire."""

    #: Payload bytes in the ZeroMQ frame.
    ZMQ = "zmq"
    #: Baseband samples in the ZeroMQ frame, impaired by a ``semalign channel`` process.
    SIM = "sim"
    #: Baseband samples over the air between two ADALM-Plutos; the frame is empty.
    PLUTO = "pluto"
    #: The in-memory twin: payload bytes by reference, with an optional loss pattern.
    MEMORY = "memory"


class Wire(Protocol):
    """The message path from one daemon to its peer (TX's DEALER side, or a memory twin)."""

    def send(self, frames: Sequence[bytes | memoryview]) -> None:
        """Queue one multipart message; raises ``Unreachable`` when no peer can take it."""
        ...


#: RX's way back to the sender of the batch being received (the air_ready notice).
Notify = Callable[[bytes], None]


@dataclass(frozen=True)
class Sent:
    """What one ``Bearer.send`` put on the wire."""

    envelope: Envelope  # as sent: ``samples`` filled in by the bearer
    wire_bytes: int  # bytes of the frame beside the envelope


@dataclass(frozen=True, eq=False)
class Received:
    """A batch's payload as RX got it.

    payload : bytes
        The announced number of bytes; bytes that did not arrive are zero.
    valid : [len(payload)] bool, or None
        None when every byte arrived (a reliable link); otherwise True where a byte is good.
    phy : PhyResult | None
        The demodulator's report (SNR, frames), for radio bearers.
    frames_lost : int
        Radio frames the sender must have sent that did not arrive whole.
    """

    payload: bytes | memoryview
    valid: npt.NDArray[np.bool_] | None = None
    phy: PhyResult | None = None
    frames_lost: int = 0

    @property
    def snr_db(self) -> float | None:
        return None if self.phy is None else self.phy.snr_db


class Bearer(abc.ABC):
    """One way of carrying payloads. TX uses ``send``; RX uses ``receive``.

    ``send`` may be called again for the same batch (a resend): a bearer that does costly
    work per batch (modulation) keeps it until ``forget(batch_id)``.
    """

    transport: ClassVar[Transport]
    #: Whether RX learns the link's SNR from this bearer (what AMC steers by).
    reports_snr: ClassVar[bool] = False

    @classmethod
    def open(cls, settings: BearerSettings) -> Bearer:
        """Build the bearer from ``settings``; a radio bearer opens its radio here."""
        return cls()

    @classmethod
    def available(cls, settings: BearerSettings) -> bool:
        """Whether ``settings`` hold what this bearer needs (RX opens every available one)."""
        return True

    @abc.abstractmethod
    def send(self, wire: Wire, envelope: Envelope, payload: bytes) -> Sent:
        """Put the batch on ``wire``; raises ``Unreachable`` (nothing sent) or ``RadioError``."""

    @abc.abstractmethod
    def receive(self, envelope: Envelope, frame: memoryview, notify: Notify) -> Received:
        """Turn the frame beside ``envelope`` into payload bytes; raises ``ProtocolError``/``RadioError``."""

    def on_air_ready(self, notice: AirReady) -> bool:
        """TX: RX's radio listens for ``notice.batch_id``; returns False if it means nothing here."""
        return False

    def forget(self, batch_id: int) -> None:
        """TX: the batch was acknowledged or given up; drop anything kept for a resend."""
        return None

    def close(self) -> None:
        """Release the bearer's resources (a radio); the wire is not the bearer's."""
        return None

    def __enter__(self) -> Bearer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send_frames(wire: Wire, envelope: Envelope, frame: bytes | memoryview) -> Sent:
    """The common tail of every ``send``: ``[envelope, frame]`` on the wire."""
    wire.send([envelope.encode(), frame])
    return Sent(envelope, len(frame))


@dataclass(frozen=True)
class BearerSettings:
    """What any bearer may need to open: the waveform, the local radio, RX's size limit."""

    phy: PhyConfig = field(default_factory=PhyConfig)
    #: The local ADALM-Pluto (``common.radio.pluto.PlutoConfig``), when there is one.
    pluto: PlutoConfig | None = None
    #: Largest payload RX accepts; announced sizes above it are refused before allocation.
    max_payload_bytes: int = 64 * 1024 * 1024


#: Where each transport's bearer lives, resolved on first use so that opening a ZeroMQ
#: link never imports the radio driver. Adding a transport: a ``Transport`` member, a
#: module with its ``Bearer`` subclass, and one row here (docs/architecture.md).
BEARERS: dict[Transport, str] = {
    Transport.ZMQ: "common.transport.zmq:ZmqBearer",
    Transport.SIM: "common.transport.sim:SimBearer",
    Transport.PLUTO: "common.transport.air:AirBearer",
    Transport.MEMORY: "common.transport.memory:MemoryBearer",
}


def bearer_class(transport: Transport) -> type[Bearer]:
    module, _, name = BEARERS[transport].partition(":")
    cls: type[Bearer] = getattr(importlib.import_module(module), name)
    return cls


def open_bearer(transport: Transport | str, settings: BearerSettings) -> Bearer:
    """TX's bearer for the configured transport (a radio bearer opens its radio)."""
    return bearer_class(Transport(transport)).open(settings)


def open_receivers(settings: BearerSettings) -> dict[Transport, Bearer]:
    """RX's bearers, one per transport it can take: all but the air unless a radio is configured."""
    return {t: bearer_class(t).open(settings) for t in Transport
            if bearer_class(t).available(settings)}
