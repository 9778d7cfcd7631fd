"""What each ``semalign ctl`` command does to TX's link, and the reply it gets.

Every change takes effect from the next batch built; a command that cannot be applied raises
(``ConfigError``, ``BudgetError``, ``ShiftError``...) and the link is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from common.errors import ConfigError
from common.link.plan import AlphaPolicy, LinkState
from common.log import get_logger
from common.modulation import Modulation
from common.wire.payload import ValueType
from tx.control import TABLE, Applies, Arg, Cmd, ControlRequest, make_reply
from tx.link import Link

log = get_logger("semalign.tx")

Reply = dict[str, Any]


def apply(link: Link, req: ControlRequest, status: Callable[[], dict[str, Any]]) -> Reply:
    """Apply ``req`` to ``link`` by the function its table entry names; the reply of a command that
    reports status carries ``status()``."""
    command = TABLE[req.cmd]
    if command.arg is Arg.ALPHA and not isinstance(req.arg, int):
        raise ConfigError(f"{req.cmd} expects an integer, got {req.arg!r}")
    reply = _APPLY[command.applies](link, req)
    return {**reply, "status": status()} if command.reports_status else reply


def _apply_run(link: Link, req: ControlRequest) -> Reply:
    if req.cmd == Cmd.AMC:
        if req.arg not in ("on", "off"):
            raise ConfigError(f"{req.cmd} expects on or off, got {req.arg!r}")
        link.set_amc(req.arg == "on")
    elif req.cmd == Cmd.PAUSE:
        link.paused = True
    elif req.cmd == Cmd.RESUME:
        link.paused = False
    return make_reply(True, message=f"{req.cmd} ok", plan=link.plan.as_dict())


def _apply_link_state(link: Link, req: ControlRequest) -> Reply:
    if req.cmd == Cmd.SET_MODULATION:
        state = replace(link.state, modulation=Modulation.parse(str(req.arg)))
        if link.amc is not None:
            log.info("amc_off", reason=f"{req.cmd} switches to manual")
        link.amc = None
    elif req.cmd == Cmd.SET_ALPHA:
        state = LinkState(link.state.modulation, AlphaPolicy.FIXED, cast(int, req.arg))  # apply checked it (Arg.ALPHA)
    else:
        policy = AlphaPolicy.parse(str(req.arg))
        state = LinkState(link.state.modulation, policy, link.state.fixed_alpha if policy is AlphaPolicy.FIXED else None)
    link.set_state(state)  # raises if no plan fits
    log.info("link_changed", cmd=req.cmd, from_batch=link.next_batch, **link.plan.as_dict())
    return make_reply(True, message=f"{req.cmd} applied from batch {link.next_batch}",
                      effective_from_batch=link.next_batch, plan=link.plan.as_dict())


def _apply_alignment(link: Link, req: ControlRequest) -> Reply:
    """Sensor shift, value type and RX's adapter reset: all from the next batch."""
    if req.cmd in (Cmd.SET_SHIFT, Cmd.CLEAR_SHIFT):
        link.set_shift("" if req.cmd == Cmd.CLEAR_SHIFT else str(req.arg or ""))
        shift = str(link.builder.shift)
        log.info("shift_changed", shift=shift, from_batch=link.next_batch)
        return make_reply(True, message=f"shift {shift} from batch {link.next_batch}",
                          effective_from_batch=link.next_batch, shift=shift, plan=link.plan.as_dict())
    if req.cmd == Cmd.SET_VALUE_TYPE:
        link.set_value_type(ValueType.parse(str(req.arg)))
        log.info("link_changed", cmd=req.cmd, from_batch=link.next_batch, **link.plan.as_dict())
        return make_reply(True, message=f"{req.cmd} applied from batch {link.next_batch}",
                          effective_from_batch=link.next_batch, plan=link.plan.as_dict())
    alpha: int | None = None
    if req.arg not in (None, "", "all"):
        if not str(req.arg).isdigit() or not 1 <= int(str(req.arg)) <= link.bundle.dims:
            raise ConfigError(f"{req.cmd} expects an alpha in 1..{link.bundle.dims} or all, got {req.arg!r}")
        alpha = int(str(req.arg))
    link.reset_adapter(alpha)
    return make_reply(True, message=f"adapter reset ({'all alphas' if alpha is None else f'alpha {alpha}'}) "
                      f"forwarded to RX before batch {link.next_batch}",
                      effective_from_batch=link.next_batch, plan=link.plan.as_dict())


#: Each ``Applies`` of the table, the function that applies it.
_APPLY: dict[Applies, Callable[[Link, ControlRequest], Reply]] = {
    Applies.LINK_STATE: _apply_link_state,
    Applies.ALIGNMENT: _apply_alignment,
    Applies.RUN: _apply_run,
}
