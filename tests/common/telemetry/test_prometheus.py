"""The Prometheus exporter: counts and gauges follow the records and events; /metrics serves them."""

from __future__ import annotations

import math
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.telemetry.prometheus import LATENCY_BUCKETS, METRICS, Exporter


def samples(exporter: Exporter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(exporter.exposition()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def ok(batch: int, **fields: object) -> dict[str, object]:
    return {"batch": batch, "status": "ok", "modulation": "64qam", "alpha": 30, "n_max": 191,
            "latency_comm_s": 0.002, "latency_finetune_s": 0.02, "latency_classify_s": 0.0004,
            "latency_e2e_s": 0.0224, "frames_lost": 0, "vectors_lost": 0, "snr_db": None,
            "latency_comm_bound_s": 0.001, "accuracy": 0.9, **fields}


def test_buckets_span_half_a_millisecond_to_ten_seconds() -> None:
    assert LATENCY_BUCKETS[0] == 0.0005 and LATENCY_BUCKETS[-1] == 10.0
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_records_and_events_drive_every_metric() -> None:
    e = Exporter()
    e.observe_record(ok(0))
    e.observe_record(ok(1, modulation="256qam", alpha=40, n_max=193, frames_lost=3, vectors_lost=20,
                        snr_db=29.5, latency_comm_bound_s=None, bank_entry=40, accuracy=1.0))
    e.observe_record({"batch": 2, "status": "lost", "modulation": "qpsk", "reason": "no ack"})
    e.observe_event("rejected", {"code": "bad_magic"})
    e.observe_event("rejected", {"code": "bad_magic"})
    e.observe_event("rejected", {"code": "oversize"})
    e.observe_event("resend", {"batch": 1})
    e.observe_event("control", {"ok": True})
    e.observe_event("control", {"ok": False})
    e.set_dropped(4)
    e.set_dropped(4)
    got = samples(e)
    assert got[("semalign_batches_total", (("status", "ok"),))] == 2
    assert got[("semalign_batches_total", (("status", "lost"),))] == 1
    assert got[("semalign_rejected_total", (("code", "bad_magic"),))] == 2
    assert got[("semalign_rejected_total", (("code", "oversize"),))] == 1
    assert got[("semalign_resends_total", ())] == 1
    assert got[("semalign_control_total", (("result", "ok"),))] == 1
    assert got[("semalign_control_total", (("result", "refused"),))] == 1
    assert got[("semalign_frames_lost_total", ())] == 3
    assert got[("semalign_vectors_lost_total", ())] == 20
    assert got[("semalign_monitor_dropped_total", ())] == 4
    assert got[("semalign_latency_e2e_seconds_count", ())] == 2
    assert got[("semalign_latency_e2e_seconds_sum", ())] == pytest.approx(0.0448)
    assert got[("semalign_latency_finetune_seconds_bucket", (("le", "0.025"),))] == 2
    assert got[("semalign_latency_finetune_seconds_bucket", (("le", "0.01"),))] == 0
    # The gauges hold the last acknowledged batch (the lost one changes none of them).
    assert got[("semalign_bits_per_symbol", ())] == 8
    assert (got[("semalign_alpha", ())], got[("semalign_n_max", ())]) == (40, 193)
    assert got[("semalign_snr_db", ())] == 29.5
    assert math.isnan(got[("semalign_sync_bound_seconds", ())])
    assert got[("semalign_adapter_bank_entry", ())] == 40
    assert got[("semalign_accuracy", ())] == 1.0


@pytest.mark.parametrize("bad", [{"batch": 0, "latency_e2e_s": "slow"}, {"batch": 0, "modulation": 7},
                                 {"batch": 0, "frames_lost": float("nan")}, {"batch": 0, "alpha": True}])
def test_odd_fields_are_skipped_not_raised(bad: dict[str, object]) -> None:
    e = Exporter()
    e.observe_record(bad)
    got = samples(e)
    assert got[("semalign_batches_total", (("status", "ok"),))] == 1
    assert got[("semalign_latency_e2e_seconds_count", ())] == 0
    assert math.isnan(got[("semalign_alpha", ())])


def test_serves_every_metric_on_loopback() -> None:
    e = Exporter()
    port = e.serve(0, "127.0.0.1")
    try:
        e.observe_record(ok(0))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        e.close()
    families = {f.name for f in text_string_to_metric_families(text)}
    served = {f"{name}_total" if f"{name}_total" in METRICS else name for name in families}
    assert set(METRICS) <= served


def test_per_receiver_every_batch_metric_is_labelled_with_the_receivers_name() -> None:
    e = Exporter(per_receiver=True)
    e.observe_record(ok(0, rx="a"))
    e.observe_record(ok(0, rx="b", modulation="256qam", alpha=40, frames_lost=2))
    e.observe_record({"batch": 1, "status": "lost", "rx": "b"})
    e.observe_event("resend", {"batch": 1, "rx": "b"})
    e.observe_event("rejected", {"code": "oversize", "rx": "a"})
    e.observe_event("control", {"ok": True})
    e.observe_status({"receivers": {"a": {"plan": {"alpha": 12, "n_max": 50}}, "c": {"plan": {"alpha": 7}}}})
    got = samples(e)
    assert got[("semalign_batches_total", (("rx", "a"), ("status", "ok")))] == 1
    assert got[("semalign_batches_total", (("rx", "b"), ("status", "lost")))] == 1
    assert got[("semalign_resends_total", (("rx", "b"),))] == 1
    assert got[("semalign_rejected_total", (("code", "oversize"), ("rx", "a")))] == 1
    assert got[("semalign_frames_lost_total", (("rx", "b"),))] == 2
    assert got[("semalign_latency_e2e_seconds_count", (("rx", "a"),))] == 1
    assert got[("semalign_control_total", (("result", "ok"),))] == 1  # the daemon's, not a receiver's
    assert (got[("semalign_alpha", (("rx", "a"),))], got[("semalign_n_max", (("rx", "a"),))]) == (12, 50)
    assert (got[("semalign_alpha", (("rx", "b"),))], got[("semalign_bits_per_symbol", (("rx", "b"),))]) == (40, 8)
    assert got[("semalign_alpha", (("rx", "c"),))] == 7 and math.isnan(got[("semalign_accuracy", (("rx", "c"),))])
    assert not any(name == "semalign_alpha" and labels == () for name, labels in got)
