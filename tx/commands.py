"""What each ``semalign ctl`` command does to TX's link, and the reply it gets.

Every change takes effect from the next batch built; a command that cannot be applied raises
(``ConfigError``, ``BudgetError``, ``ShiftError``...) and the link is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from common.errors import ConfigError
from common.link.plan import AlphaPolicy, LinkState
from common.log import get_logger
from common.modulation import Modulation
from common.wire.payload import ValueType
from tx.control import ControlRequest, encode_reply
from tx.link import Link

log = get_logger("semalign.tx")

#: Commands that change what the batches carry (and what RX carries over), not the link budget.
ALIGNMENT = ("set-shift", "clear-shift", "set-value-type", "reset-adapter")
#: Commands that change the link state: a new plan, checked before it replaces the old one.
LINK_STATE = ("set-modulation", "set-alpha", "set-policy")


def apply(link: Link, req: ControlRequest, status: Callable[[], dict[str, Any]]) -> bytes:
    """Apply ``req`` to ``link``; the reply of pause, resume, amc and status carries ``status()``."""
    if req.cmd in ALIGNMENT:
        return _apply_alignment(link, req)
    if req.cmd in LINK_STATE:
        return _apply_link_state(link, req)
    if req.cmd == "amc":
        if req.arg not in ("on", "off"):
            raise ConfigError(f"amc expects on or off, got {req.arg!r}")
        link.set_amc(req.arg == "on")
    elif req.cmd == "pause":
        link.paused = True
    elif req.cmd == "resume":
        link.paused = False
    return encode_reply(True, message=f"{req.cmd} ok", plan=link.plan.as_dict(), status=status())


def _apply_link_state(link: Link, req: ControlRequest) -> bytes:
    if req.cmd == "set-modulation":
        state = replace(link.state, modulation=Modulation.parse(str(req.arg)))
        if link.amc is not None:
            log.info("amc_off", reason="set-modulation switches to manual")
        link.amc = None
    elif req.cmd == "set-alpha":
        if not isinstance(req.arg, int):
            raise ConfigError(f"set-alpha expects an integer, got {req.arg!r}")
        state = LinkState(link.state.modulation, AlphaPolicy.FIXED, req.arg)
    else:
        policy = AlphaPolicy.parse(str(req.arg))
        state = LinkState(link.state.modulation, policy, link.state.fixed_alpha if policy is AlphaPolicy.FIXED else None)
    link.set_state(state)  # raises if no plan fits
    log.info("link_changed", cmd=req.cmd, from_batch=link.next_batch, **link.plan.as_dict())
    return encode_reply(True, message=f"{req.cmd} applied from batch {link.next_batch}",
                        effective_from_batch=link.next_batch, plan=link.plan.as_dict())


def _apply_alignment(link: Link, req: ControlRequest) -> bytes:
    """Sensor shift, value type and RX's adapter reset: all from the next batch."""
    if req.cmd in ("set-shift", "clear-shift"):
        link.set_shift("" if req.cmd == "clear-shift" else str(req.arg or ""))
        shift = str(link.builder.shift)
        log.info("shift_changed", shift=shift, from_batch=link.next_batch)
        return encode_reply(True, message=f"shift {shift} from batch {link.next_batch}",
                            effective_from_batch=link.next_batch, shift=shift, plan=link.plan.as_dict())
    if req.cmd == "set-value-type":
        link.set_value_type(ValueType.parse(str(req.arg)))
        log.info("link_changed", cmd=req.cmd, from_batch=link.next_batch, **link.plan.as_dict())
        return encode_reply(True, message=f"{req.cmd} applied from batch {link.next_batch}",
                            effective_from_batch=link.next_batch, plan=link.plan.as_dict())
    alpha: int | None = None
    if req.arg not in (None, "", "all"):
        if not str(req.arg).isdigit() or not 1 <= int(str(req.arg)) <= link.bundle.dims:
            raise ConfigError(f"reset-adapter expects an alpha in 1..{link.bundle.dims} or all, got {req.arg!r}")
        alpha = int(str(req.arg))
    link.reset_adapter(alpha)
    return encode_reply(True, message=f"adapter reset ({'all alphas' if alpha is None else f'alpha {alpha}'}) "
                        f"forwarded to RX before batch {link.next_batch}",
                        effective_from_batch=link.next_batch, plan=link.plan.as_dict())
