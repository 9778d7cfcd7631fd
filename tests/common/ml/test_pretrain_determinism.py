"""Pre-training gives the same bundle whatever thread count the caller left torch and BLAS on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

from common.data.spec import load_dataset
from common.ml.bundle import PretrainConfig, pretrain_defaults
from common.ml.pretrain import PRETRAIN_THREADS, build_bank, pretrain, save_bundle


@pytest.mark.parametrize("threads", [2])
def test_same_bundle_hash_whatever_the_thread_count(tmp_path: Path, threads: int) -> None:
    ds = load_dataset("digits")
    config = PretrainConfig(**{**pretrain_defaults("digits").__dict__, "epochs": 10})
    hashes = []
    before = torch.get_num_threads()
    try:
        for i, n in enumerate((1, threads)):
            torch.set_num_threads(n)
            with threadpool_limits(limits=n):
                codec, model, acc = pretrain(ds, config)
                bank = build_bank(ds, codec, model, (10,))
                bundle = save_bundle(tmp_path / f"b{i}", ds, config, codec, model, acc, bank=bank)
            assert torch.get_num_threads() == n  # restored after pre-training
            hashes.append(bundle.hash)
            assert bundle.meta.environment is not None
            assert bundle.meta.environment["threads"] == PRETRAIN_THREADS
            assert bundle.meta.environment["torch"] == torch.__version__
    finally:
        torch.set_num_threads(before)
    assert hashes[0] == hashes[1]
