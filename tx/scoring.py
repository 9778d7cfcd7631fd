"""TX scores RX's predictions against the test labels only it holds, and writes each batch's row."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt

from common.errors import BadSyncMessage
from common.log import get_logger
from common.timesync import CommLatency, comm_metrics
from common.wire import messages
from common.wire import payload as wire
from tx.inflight import Pending

log = get_logger("semalign.tx")


class Scoreboard:
    """Running accuracy over every delivered test vector, and the per-batch metrics rows."""

    def __init__(self, counters: Counter[str]) -> None:
        self.correct = 0
        self.scored = 0
        self.counters = counters

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None

    def score(self, pending: Pending, report: messages.Report, rtt_s: float) -> dict[str, Any]:
        """The metrics row of an acknowledged batch."""
        return {**base_record(pending), **self.report_fields(pending.batch.test_labels, report), "rtt_s": rtt_s}

    def report_fields(self, labels: npt.NDArray[np.integer[Any]], report: messages.Report) -> dict[str, Any]:
        """The row's fields from RX's report, scored against the batch's test ``labels`` [t]
        (this run's, or an earlier run's from the journal)."""
        try:
            comm = CommLatency.from_dict(report.comm) if report.comm is not None else None
        except BadSyncMessage as exc:
            self.counters["bad_reply"] += 1
            log.warning("bad_comm_record", batch=report.batch_id, detail=str(exc))
            comm = None
        predictions = np.frombuffer(report.predictions, dtype=np.uint8)
        # A test vector lost on the air has no prediction (0xFF); score the delivered ones.
        delivered = predictions != wire.NO_LABEL
        correct = int((predictions[delivered] == labels[delivered]).sum())
        n_delivered = int(delivered.sum())
        self.correct += correct
        self.scored += n_delivered
        return {
            "status": "ok",
            "n_train": report.n_train,
            "n_test_delivered": n_delivered,
            "vectors_lost": report.vectors_lost,
            "frames_lost": report.frames_lost,
            "snr_db": report.snr_db,
            "accuracy": correct / n_delivered if n_delivered else None,
            "latency_comm_s": report.latency_comm_s,
            **(comm_metrics(comm) if comm is not None else {}),
            "latency_finetune_s": report.latency_finetune_s,
            "latency_classify_s": report.latency_classify_s,
            "latency_e2e_s": report.latency_e2e_s,
            "adapt": report.adapt,
            **alignment_fields(report.extra),
            "train_loss": report.train_loss,
            "t_b_ns": report.t_b_ns,
        }


def alignment_fields(extra: dict[str, Any]) -> dict[str, Any]:
    """RX's alignment policy, gate figure and action from a report's ``extra`` (untrusted: typed here)."""
    policy, gate, action = extra.get("policy"), extra.get("gate"), extra.get("align_action")
    return {
        "policy": policy if isinstance(policy, str) else None,
        "gate": float(gate) if isinstance(gate, int | float) and not isinstance(gate, bool) else None,
        "align_action": action if isinstance(action, str) else None,
    }


def base_record(pending: Pending) -> dict[str, Any]:
    """The fields every row of a batch has, acknowledged or lost."""
    batch, plan = pending.batch, pending.batch.plan
    return {
        "batch": pending.batch_id,
        "modulation": plan.modulation.value,
        "alpha": plan.alpha,
        "b_max": plan.b_max,
        "n_max": plan.n_max,
        "value_type": plan.value_type.name.lower(),
        "shift": batch.shift,
        "n_test": plan.t,
        "n_train": pending.envelope.n,
        "payload_bytes": len(batch.payload),
        "transport": pending.envelope.transport,
        "wire_bytes": pending.wire_bytes,
        "accuracy": None,
        "attempts": pending.sends,
        "encode_s": batch.encode_s,
        "t_a_ns": batch.a.realtime_ns,
    }
