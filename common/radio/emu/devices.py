"""The emulated ADALM-Pluto's IIO devices: channels, attributes, and the AD936x settings behind them.

Attribute values follow the ad9361 Linux driver as seen through iiod: ranges are checked
(``-EINVAL`` outside), values are rounded to what the part can do and read back rounded.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import re
import threading
from collections.abc import Callable

from common.errors import IiodError
from common.radio.pluto import STATUS_REG

#: The AD9364 LO range (a Pluto with the widely used firmware setting; PlutoConfig's range);
#: the stock AD9363 covers 325 MHz - 3.8 GHz (``part="ad9363"``).
LO_RANGES_HZ = {"ad9364": (70_000_000, 6_000_000_000), "ad9363": (325_000_000, 3_800_000_000)}
#: Sampling rate limits of the baseband chain: the ADC needs >= 25 MHz and decimates by at
#: most 12 in its half-band filters, times the FIR's 1, 2 or 4; 61.44 MS/s is the top.
ADC_MIN_HZ = 25_000_000
HB_MAX_DECIMATION = 12
MAX_SAMPLE_RATE_HZ = 61_440_000
RX_BANDWIDTH_HZ = (200_000, 56_000_000)
TX_BANDWIDTH_HZ = (200_000, 40_000_000)
TX_ATTEN_DB = (-89.75, 0.0)
TX_ATTEN_STEP_DB = 0.25
RX_GAIN_DB = (-3, 71)
#: Gain the (emulated) AGC settles at: what ``hardwaregain`` reads outside manual mode.
AGC_GAIN_DB = 50
GAIN_MODES = ("manual", "fast_attack", "slow_attack", "hybrid")
#: RFPLL: 40 MHz reference doubled, 23-bit fractional modulus, VCO 6-12 GHz divided by 2..128.
_REF_HZ = 80_000_000
_FRAC_MODULUS = 8_388_593
#: DAC status bit of the cores' status register (``STATUS_REG``, the driver's): an underflow.
DAC_UNDERFLOW = 0x1
#: Largest FIR: 128 taps, in multiples of 16.
MAX_FIR_TAPS = 128

Reader = Callable[[], str]
Writer = Callable[[str], None]


def invalid(message: str) -> IiodError:
    return IiodError(errno.EINVAL, message)


def parse_number(text: str) -> float:
    """A number as the driver's ``kstrto*`` would accept it (leading/trailing blanks allowed)."""
    try:
        value = float(text.strip().split()[0]) if text.strip() else math.nan
    except ValueError:
        raise invalid(f"not a number: {text[:40]!r}") from None
    if not math.isfinite(value):
        raise invalid(f"not a finite number: {text[:40]!r}")
    return value


@dataclasses.dataclass
class Attribute:
    """One attribute: ``read()`` gives its text, ``write(text)`` applies it or raises IiodError."""

    name: str
    filename: str
    read: Reader
    write: Writer | None = None

    def set(self, text: str) -> None:
        if self.write is None:
            raise IiodError(errno.EACCES, f"attribute {self.name} is read-only")
        self.write(text)


@dataclasses.dataclass
class ScanElement:
    index: int
    #: libiio's format string: ``le:S12/16>>0`` is 12 significant bits in a 16-bit word.
    format: str
    bytes: int = 2


@dataclasses.dataclass
class Channel:
    id: str
    output: bool
    name: str | None = None
    scan: ScanElement | None = None
    attrs: dict[str, Attribute] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Device:
    id: str
    name: str
    channels: list[Channel]
    attrs: dict[str, Attribute] = dataclasses.field(default_factory=dict)
    debug_attrs: dict[str, Attribute] = dataclasses.field(default_factory=dict)
    buffer_attrs: dict[str, Attribute] = dataclasses.field(default_factory=dict)
    #: "rx" (ADC), "tx" (DAC) or None: whether the device streams, and which way.
    stream: str | None = None

    def channel(self, cid: str, output: bool) -> Channel | None:
        return next((c for c in self.channels if c.id == cid and c.output == output), None)

    @property
    def scan_channels(self) -> list[Channel]:
        """Channels with a scan element, in the order of their mask bits (index order)."""
        return [c for c in self.channels if c.scan is not None]

    @property
    def mask_words(self) -> int:
        return (len(self.channels) + 31) // 32


def _fmt_db(value: float) -> str:
    return f"{value:.6f} dB"


class Ad936xState:
    """The transceiver's settings, shared by its three IIO devices; thread-safe."""

    def __init__(self, part: str = "ad9364") -> None:
        if part not in LO_RANGES_HZ:
            raise invalid(f"unknown part {part!r}, expected one of {sorted(LO_RANGES_HZ)}")
        self.part = part
        self.lock = threading.RLock()
        # Power-on defaults of a Pluto (firmware v0.3x).
        self.sample_rate = 30_720_000
        self.fir_enabled = False
        self.fir_rx_dec = 4
        self.fir_tx_int = 4
        self.fir_taps = 128
        self.rx_bandwidth = 18_000_000
        self.tx_bandwidth = 18_000_000
        self.rx_lo = 2_400_000_000
        self.tx_lo = 2_450_000_000
        self.gain_mode = "slow_attack"
        self.rx_gain = float(AGC_GAIN_DB)
        self.tx_atten = -10.0
        self.ensm_mode = "fdd"
        self.dds_raw: dict[str, str] = {}
        self.status = {"rx": 0, "tx": 0}
        self.reg_addr = {"rx": 0, "tx": 0}

    # -- the sample rate chain --------------------------------------------------------------
    def rate_range(self, fir_enabled: bool, dec: int) -> tuple[int, int]:
        d = dec if fir_enabled else 1
        return math.ceil(ADC_MIN_HZ / (HB_MAX_DECIMATION * d)), MAX_SAMPLE_RATE_HZ // d

    def set_sample_rate(self, text: str) -> None:
        rate = round(parse_number(text))
        with self.lock:
            lo, hi = self.rate_range(self.fir_enabled, self.fir_rx_dec)
            if not lo <= rate <= hi:
                fir = f"FIR decimating by {self.fir_rx_dec}" if self.fir_enabled else "FIR disabled"
                raise invalid(f"sampling_frequency {rate} outside [{lo}, {hi}] ({fir})")
            self.sample_rate = rate

    def set_fir_enabled(self, text: str) -> None:
        enable = parse_number(text) != 0
        with self.lock:
            lo, hi = self.rate_range(enable, self.fir_rx_dec)
            if enable and not lo <= self.sample_rate <= hi:
                raise invalid(
                    f"cannot enable the FIR (x{self.fir_rx_dec}) at {self.sample_rate} S/s: needs [{lo}, {hi}]"
                )
            self.fir_enabled = enable

    def path_rates(self, tx: bool) -> str:
        """``tx_path_rates``/``rx_path_rates``: every clock of the chain, as the driver prints it."""
        with self.lock:
            rate, d = self.sample_rate, (self.fir_tx_int if tx else self.fir_rx_dec) if self.fir_enabled else 1
        fir_rate = rate * d
        hb = max(h for h in (1, 2, 4, 8) if h == 1 or fir_rate * h <= 122_880_000)
        hb1 = min(hb, 2)
        hb2 = min(hb // hb1, 2)
        conv = fir_rate * hb
        pll = conv
        while pll < 715_000_000:
            pll *= 2
        if tx:
            return (f"BBPLL:{pll} DAC:{conv} T2:{fir_rate * hb1 * hb2} T1:{fir_rate * hb1} "
                    f"TF:{fir_rate} TXSAMP:{rate}")
        return (f"BBPLL:{pll} ADC:{conv * 2} R2:{fir_rate * hb1 * hb2} R1:{fir_rate * hb1} "
                f"RF:{fir_rate} RXSAMP:{rate}")

    def set_fir_config(self, text: str) -> None:
        """Parse a FIR file (``RX 3 GAIN -6 DEC 4`` / ``TX 3 GAIN 0 INT 4`` / ``c_rx,c_tx`` lines)."""
        dec = interp = None
        taps = 0
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            words = line.split()
            if words[0] == "RX" and "DEC" in words:
                dec = self._factor(words, "DEC")
            elif words[0] == "TX" and "INT" in words:
                interp = self._factor(words, "INT")
            elif re.fullmatch(r"-?\d+\s*,\s*-?\d+", line):
                if any(not -32768 <= int(v) <= 32767 for v in line.split(",")):
                    raise invalid(f"FIR coefficient out of int16 range: {line!r}")
                taps += 1
            elif re.fullmatch(r"-?\d+", line):
                taps += 1
            else:
                raise invalid(f"cannot parse FIR line {line[:40]!r}")
        if taps == 0 or taps > MAX_FIR_TAPS or taps % 16:
            raise invalid(f"FIR must have 16..{MAX_FIR_TAPS} taps in steps of 16, got {taps}")
        with self.lock:
            if self.fir_enabled:
                raise IiodError(errno.EBUSY, "disable the FIR before loading a new one")
            self.fir_rx_dec = dec or self.fir_rx_dec
            self.fir_tx_int = interp or self.fir_tx_int
            self.fir_taps = taps

    @staticmethod
    def _factor(words: list[str], key: str) -> int:
        try:
            value = int(words[words.index(key) + 1])
        except (IndexError, ValueError):
            raise invalid(f"FIR {key} needs a value") from None
        if value not in (1, 2, 4):
            raise invalid(f"FIR {key} must be 1, 2 or 4, got {value}")
        return value

    # -- RF ----------------------------------------------------------------------------------
    def round_lo(self, text: str) -> int:
        """The LO the RFPLL can make closest to ``text`` (Hz), or EINVAL outside the part's range."""
        freq = parse_number(text)
        lo, hi = LO_RANGES_HZ[self.part]
        if not lo <= freq <= hi:
            raise invalid(f"LO frequency {freq:.0f} outside [{lo}, {hi}] ({self.part})")
        div = 2
        while freq * div < 6e9 and div < 128:
            div *= 2
        step = _REF_HZ / _FRAC_MODULUS / div
        return round(round(freq / step) * step)

    def set_bandwidth(self, tx: bool, text: str) -> None:
        lo, hi = TX_BANDWIDTH_HZ if tx else RX_BANDWIDTH_HZ
        bw = round(parse_number(text))
        if not lo <= bw <= hi:
            raise invalid(f"rf_bandwidth {bw} outside [{lo}, {hi}]")
        with self.lock:
            if tx:
                self.tx_bandwidth = bw
            else:
                self.rx_bandwidth = bw

    def set_tx_atten(self, text: str) -> None:
        value = parse_number(text)
        if not TX_ATTEN_DB[0] <= value <= TX_ATTEN_DB[1]:
            raise invalid(f"TX hardwaregain {value} outside [{TX_ATTEN_DB[0]}, {TX_ATTEN_DB[1]}] dB")
        self.tx_atten = round(value / TX_ATTEN_STEP_DB) * TX_ATTEN_STEP_DB

    def set_rx_gain(self, text: str) -> None:
        value = parse_number(text)
        if not RX_GAIN_DB[0] <= value <= RX_GAIN_DB[1]:
            raise invalid(f"RX hardwaregain {value} outside [{RX_GAIN_DB[0]}, {RX_GAIN_DB[1]}] dB")
        with self.lock:
            # Outside manual mode the AGC owns the gain: the write does not last.
            if self.gain_mode == "manual":
                self.rx_gain = float(round(value))

    def set_gain_mode(self, text: str) -> None:
        mode = text.strip()
        if mode not in GAIN_MODES:
            raise invalid(f"gain_control_mode {mode[:20]!r}, expected one of {GAIN_MODES}")
        with self.lock:
            self.gain_mode = mode
            if mode != "manual":
                self.rx_gain = float(AGC_GAIN_DB)

    # -- core status register (overflow / underflow) -----------------------------------------
    def reg_write(self, side: str, text: str) -> None:
        words = text.split()
        try:
            addr = int(words[0], 0)
            value = int(words[1], 0) if len(words) > 1 else None
        except (IndexError, ValueError):
            raise invalid(f"direct_reg_access expects 'ADDR [VALUE]', got {text[:40]!r}") from None
        with self.lock:
            self.reg_addr[side] = addr
            if value is not None and addr == STATUS_REG:
                self.status[side] &= ~value  # write 1 to clear

    def reg_read(self, side: str) -> str:
        with self.lock:
            value = self.status[side] if self.reg_addr[side] == STATUS_REG else 0
        return f"0x{value:X}"

    def flag(self, side: str, bit: int) -> None:
        with self.lock:
            self.status[side] |= bit


def _attr(channel_prefix: str, name: str, read: Reader, write: Writer | None = None,
          filename: str | None = None) -> Attribute:
    return Attribute(name, filename or f"{channel_prefix}_{name}", read, write)


def _static(value: str) -> Reader:
    return lambda: value


def _store(store: dict[str, str], key: str) -> Writer:
    def write(text: str) -> None:
        store[key] = text.strip()

    return write


def build_devices(state: Ad936xState) -> list[Device]:
    """The three devices pyadi-iio's ``adi.Pluto`` drives: ad9361-phy, the DAC and the ADC."""
    s = state
    rate = lambda: str(s.sample_rate)  # noqa: E731
    rate_available = lambda: "[{} 1 {}]".format(*s.rate_range(s.fir_enabled, s.fir_rx_dec))  # noqa: E731

    def lo_channel(cid: str, label: str, which: str) -> Channel:
        def read() -> str:
            return str(getattr(s, which))

        def write(text: str) -> None:
            setattr(s, which, s.round_lo(text))

        lo, hi = LO_RANGES_HZ[s.part]
        prefix = f"out_{cid}_{label}"
        return Channel(cid, True, label, attrs={
            "frequency": _attr(prefix, "frequency", read, write),
            "frequency_available": _attr(prefix, "frequency_available", _static(f"[{lo} 1 {hi}]")),
            "powerdown": _attr(prefix, "powerdown", _static("0"), lambda _t: None),
            "external": _attr(prefix, "external", _static("0")),
        })

    phy_in = Channel("voltage0", False, attrs={
        "sampling_frequency": _attr("in_voltage", "sampling_frequency", rate, s.set_sample_rate),
        "sampling_frequency_available": _attr("in_voltage", "sampling_frequency_available", rate_available),
        "rf_bandwidth": _attr("in_voltage", "rf_bandwidth", lambda: str(s.rx_bandwidth),
                              lambda t: s.set_bandwidth(False, t)),
        "rf_bandwidth_available": _attr("in_voltage", "rf_bandwidth_available",
                                        _static(f"[{RX_BANDWIDTH_HZ[0]} 1 {RX_BANDWIDTH_HZ[1]}]")),
        "gain_control_mode": _attr("in_voltage0", "gain_control_mode", lambda: s.gain_mode, s.set_gain_mode),
        "gain_control_mode_available": _attr("in_voltage", "gain_control_mode_available",
                                             _static(" ".join(GAIN_MODES))),
        "hardwaregain": _attr("in_voltage0", "hardwaregain", lambda: _fmt_db(s.rx_gain), s.set_rx_gain),
        "hardwaregain_available": _attr("in_voltage0", "hardwaregain_available",
                                        _static(f"[{RX_GAIN_DB[0]} 1 {RX_GAIN_DB[1]}]")),
        "rssi": _attr("in_voltage0", "rssi", _static("96.25 dB")),
        "filter_fir_en": _attr("in_voltage", "filter_fir_en", lambda: str(int(s.fir_enabled)), s.set_fir_enabled),
        "rf_port_select": _attr("in_voltage0", "rf_port_select", _static("A_BALANCED")),
    })
    phy_out = Channel("voltage0", True, attrs={
        "sampling_frequency": _attr("out_voltage", "sampling_frequency", rate, s.set_sample_rate),
        "sampling_frequency_available": _attr("out_voltage", "sampling_frequency_available", rate_available),
        "rf_bandwidth": _attr("out_voltage", "rf_bandwidth", lambda: str(s.tx_bandwidth),
                              lambda t: s.set_bandwidth(True, t)),
        "rf_bandwidth_available": _attr("out_voltage", "rf_bandwidth_available",
                                        _static(f"[{TX_BANDWIDTH_HZ[0]} 1 {TX_BANDWIDTH_HZ[1]}]")),
        "hardwaregain": _attr("out_voltage0", "hardwaregain", lambda: _fmt_db(s.tx_atten), s.set_tx_atten),
        "hardwaregain_available": _attr("out_voltage0", "hardwaregain_available",
                                        _static(f"[{TX_ATTEN_DB[0]} {TX_ATTEN_STEP_DB} {TX_ATTEN_DB[1]}]")),
        "rssi": _attr("out_voltage0", "rssi", _static("0.00 dB")),
        "filter_fir_en": _attr("out_voltage", "filter_fir_en", lambda: str(int(s.fir_enabled)), s.set_fir_enabled),
        "rf_port_select": _attr("out_voltage0", "rf_port_select", _static("A")),
    })
    fir_en = Channel("out", False, attrs={
        "voltage_filter_fir_en": _attr("in_out", "voltage_filter_fir_en", lambda: str(int(s.fir_enabled)),
                                       s.set_fir_enabled),
    })
    temp = Channel("temp0", False, attrs={"input": _attr("in_temp0", "input", _static("41000"))})

    def set_ensm(text: str) -> None:
        if text.strip() not in ("sleep", "wait", "alert", "fdd", "pinctrl", "pinctrl_fdd_indep"):
            raise invalid(f"ensm_mode {text[:20]!r}")
        s.ensm_mode = text.strip()

    phy = Device("iio:device0", "ad9361-phy", [
        lo_channel("altvoltage0", "RX_LO", "rx_lo"), lo_channel("altvoltage1", "TX_LO", "tx_lo"),
        phy_in, phy_out, fir_en, temp,
    ], attrs={
        "filter_fir_config": Attribute(
            "filter_fir_config", "filter_fir_config",
            lambda: f"FIR Rx: {s.fir_taps},{s.fir_rx_dec} Tx: {s.fir_taps},{s.fir_tx_int}", s.set_fir_config),
        "tx_path_rates": Attribute("tx_path_rates", "tx_path_rates", lambda: s.path_rates(True)),
        "rx_path_rates": Attribute("rx_path_rates", "rx_path_rates", lambda: s.path_rates(False)),
        "ensm_mode": Attribute("ensm_mode", "ensm_mode", lambda: s.ensm_mode, set_ensm),
        "ensm_mode_available": Attribute("ensm_mode_available", "ensm_mode_available",
                                         _static("sleep wait alert fdd pinctrl pinctrl_fdd_indep")),
        "xo_correction": Attribute("xo_correction", "xo_correction", _static("40000000")),
    }, debug_attrs={
        "loopback": Attribute("loopback", "loopback", _static("0"), lambda _t: None),
    })

    def stream_attrs(channel: str, output: bool) -> dict[str, Attribute]:
        prefix = ("out_" if output else "in_") + "voltage"
        return {
            "sampling_frequency": _attr(prefix, "sampling_frequency", rate),
            "sampling_frequency_available": _attr(prefix, "sampling_frequency_available",
                                                  lambda: f"{s.sample_rate} {s.sample_rate // 8}"),
            "calibscale": _attr(f"{prefix}{channel[-1]}", "calibscale", _static("1.000000")),
            "calibphase": _attr(f"{prefix}{channel[-1]}", "calibphase", _static("0.000000")),
        }

    def buffer_attrs() -> dict[str, Attribute]:
        return {
            "data_available": Attribute("data_available", "data_available", _static("0")),
            "length_align_bytes": Attribute("length_align_bytes", "length_align_bytes", _static("8")),
            "watermark": Attribute("watermark", "watermark", _static("2048")),
        }

    def dds_channel(index: int, label: str) -> Channel:
        cid = f"altvoltage{index}"
        prefix = f"out_{cid}_{label}"
        attrs = {}
        for name, default in (("raw", "1"), ("frequency", "9279985"), ("scale", "0.250000"), ("phase", "90000")):
            key = f"{cid}.{name}"
            s.dds_raw.setdefault(key, default)
            attrs[name] = _attr(prefix, name, lambda key=key: s.dds_raw[key], _store(s.dds_raw, key))  # type: ignore[misc]
        return Channel(cid, True, label, attrs=attrs)

    def reg(side: str) -> dict[str, Attribute]:
        return {"direct_reg_access": Attribute(
            "direct_reg_access", "direct_reg_access", lambda: s.reg_read(side), lambda t: s.reg_write(side, t))}

    # Scan channels first, in index order: the OPEN mask's bit i is channel i.
    dac = Device("iio:device1", "cf-ad9361-dds-core-lpc", [
        Channel("voltage0", True, scan=ScanElement(0, "le:S16/16>>0"), attrs=stream_attrs("voltage0", True)),
        Channel("voltage1", True, scan=ScanElement(1, "le:S16/16>>0"), attrs=stream_attrs("voltage1", True)),
        dds_channel(0, "TX1_I_F1"), dds_channel(1, "TX1_I_F2"),
        dds_channel(2, "TX1_Q_F1"), dds_channel(3, "TX1_Q_F2"),
    ], debug_attrs=reg("tx"), buffer_attrs=buffer_attrs(), stream="tx")
    adc = Device("iio:device2", "cf-ad9361-lpc", [
        Channel("voltage0", False, scan=ScanElement(0, "le:S12/16>>0"), attrs=stream_attrs("voltage0", False)),
        Channel("voltage1", False, scan=ScanElement(1, "le:S12/16>>0"), attrs=stream_attrs("voltage1", False)),
    ], debug_attrs=reg("rx"), buffer_attrs=buffer_attrs(), stream="rx")
    return [phy, dac, adc]
