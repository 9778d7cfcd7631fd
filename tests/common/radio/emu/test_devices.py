"""The AD936x model behind the emulated attributes: ranges, rounding, the FIR and the rate chain."""

from __future__ import annotations

import errno

import pytest

from common.errors import IiodError
from common.radio.emu.context import context_xml
from common.radio.emu.devices import Ad936xState, build_devices
from common.radio.pluto import ADC_OVERFLOW, STATUS_REG


def _fir(dec: int, taps: int = 128) -> str:
    return f"RX 3 GAIN -6 DEC {dec}\nTX 3 GAIN 0 INT {dec}\n" + "1,1\n" * taps


@pytest.mark.parametrize(("text", "expected"), [("-10", -10.0), ("-10.1", -10.0), ("-10.13", -10.25),
                                                ("0", 0.0), ("-89.75", -89.75)])
def test_tx_attenuation_rounds_to_quarter_db(text: str, expected: float) -> None:
    state = Ad936xState()
    state.set_tx_atten(text)
    assert state.tx_atten == expected


@pytest.mark.parametrize("text", ["0.5", "-90", "nan", "abc", ""])
def test_tx_attenuation_out_of_range_is_einval(text: str) -> None:
    with pytest.raises(IiodError) as info:
        Ad936xState().set_tx_atten(text)
    assert info.value.errno == errno.EINVAL


def test_rx_gain_lasts_only_in_manual_mode() -> None:
    state = Ad936xState()
    state.set_rx_gain("30.4")
    assert state.rx_gain == 50.0  # the AGC owns it
    state.set_gain_mode("manual")
    state.set_rx_gain("30.4")
    assert state.rx_gain == 30.0
    with pytest.raises(IiodError):
        state.set_rx_gain("72")
    with pytest.raises(IiodError):
        state.set_gain_mode("auto")


@pytest.mark.parametrize(("part", "freq", "ok"), [("ad9364", 70e6, True), ("ad9364", 69e6, False),
                                                  ("ad9363", 100e6, False), ("ad9363", 2.4e9, True),
                                                  ("ad9364", 6.1e9, False)])
def test_lo_range_depends_on_the_part(part: str, freq: float, ok: bool) -> None:
    state = Ad936xState(part)
    if ok:
        assert abs(state.round_lo(str(freq)) - freq) < 10
    else:
        with pytest.raises(IiodError):
            state.round_lo(str(freq))


def test_lo_rounds_to_the_synthesiser_step() -> None:
    state = Ad936xState()
    got = state.round_lo("2400000003")
    step = 80e6 / 8_388_593 / 4  # VCO divider 4 at 2.4 GHz
    assert abs(got - 2400000003) <= step and got % 1 == 0


def test_low_rates_need_the_decimating_fir() -> None:
    state = Ad936xState()
    with pytest.raises(IiodError):
        state.set_sample_rate("2000000")  # below 25 MHz / 12 without the FIR
    state.set_sample_rate("3000000")
    state.set_fir_config(_fir(4))
    state.set_fir_enabled("1")
    state.set_sample_rate("2000000")
    state.set_sample_rate("521000")
    with pytest.raises(IiodError):
        state.set_sample_rate("520000")
    with pytest.raises(IiodError) as info:
        state.set_fir_config(_fir(2))  # loading a FIR while it runs
    assert info.value.errno == errno.EBUSY
    rates = state.path_rates(tx=True).split()
    assert rates[-1] == "TXSAMP:521000" and int(rates[1].split(":")[1]) // 521000 * 16 >= 128


@pytest.mark.parametrize("fir", ["RX 3 GAIN -6 DEC 3\n" + "1,1\n" * 128, "1,1\n" * 129, "1,1\n" * 20,
                                 "RX 3 GAIN -6 DEC 4\n" + "1,99999\n" * 128, "hello\n"])
def test_bad_fir_files_are_refused(fir: str) -> None:
    with pytest.raises(IiodError):
        Ad936xState().set_fir_config(fir)


def test_overflow_status_register_is_write_one_to_clear() -> None:
    state = Ad936xState()
    state.flag("rx", ADC_OVERFLOW)
    state.reg_write("rx", f"0x{STATUS_REG:x}")
    assert state.reg_read("rx") == "0x4"
    state.reg_write("rx", f"0x{STATUS_REG:x} 0x4")
    assert state.reg_read("rx") == "0x0"


def test_context_xml_lists_what_adi_pluto_uses() -> None:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(context_xml(build_devices(Ad936xState()), {"hw_model": "x"}).split("]>", 1)[1])
    devices = {d.get("name"): d for d in root.findall("device")}
    assert set(devices) == {"ad9361-phy", "cf-ad9361-dds-core-lpc", "cf-ad9361-lpc"}
    adc = devices["cf-ad9361-lpc"]
    scan = [(c.get("id"), c.find("scan-element").get("format")) for c in adc.findall("channel")  # type: ignore[union-attr]
            if c.find("scan-element") is not None]
    assert scan == [("voltage0", "le:S12/16>>0"), ("voltage1", "le:S12/16>>0")]
    phy_attrs = {(c.get("id"), c.get("type"), a.get("name")) for c in devices["ad9361-phy"].findall("channel")
                 for a in c.findall("attribute")}
    for needed in [("voltage0", "input", "sampling_frequency"), ("altvoltage1", "output", "frequency"),
                   ("voltage0", "output", "hardwaregain"), ("out", "input", "voltage_filter_fir_en"),
                   ("voltage0", "input", "gain_control_mode")]:
        assert needed in phy_attrs
