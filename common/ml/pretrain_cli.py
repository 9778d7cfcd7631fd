"""``semalign pretrain``: fit PCA and pre-train the MLP on a dataset's pretrain split; write a bundle.

Defaults come from the dataset's spec (``DatasetSpec.pretrain``); flags override some of them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from common.data.spec import DATASET_NAMES, get_spec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="semalign pretrain", description="Fit PCA and pre-train the MLP; write a bundle.")
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES)
    p.add_argument("--data-dir", type=Path, help="directory with the IDX files (mnist, fashion-mnist)")
    p.add_argument("--download", action="store_true", help="fetch missing dataset files from public mirrors")
    p.add_argument("--dims", type=int, help="PCA components kept (the largest alpha)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--bank", metavar="ALPHAS",
                   help="distil one LoRA adapter per alpha into the bundle, e.g. 150,100,60,40,20,10")
    args = p.parse_args(argv)
    # Imported after parsing: --help costs no torch.
    from common.data.spec import load_dataset
    from common.ml.bank import parse_alphas
    from common.ml.bundle import PretrainConfig
    from common.ml.pretrain import build_bank, pretrain, save_bundle

    base = get_spec(args.dataset).pretrain
    config = PretrainConfig(
        **{**asdict(base), "dims": args.dims or base.dims, "epochs": args.epochs or base.epochs, "seed": args.seed}
    )
    ds = load_dataset(args.dataset, args.data_dir, download=args.download)
    tty = sys.stderr.isatty()

    def on_epoch(epoch: int, loss: float) -> None:
        if tty:
            print(f"\rpretrain epoch {epoch + 1}/{config.epochs} loss {loss:.4f}", end="", file=sys.stderr, flush=True)

    alphas = parse_alphas(args.bank, config.dims) if args.bank else ()
    codec, model, acc = pretrain(ds, config, on_epoch=on_epoch)
    if tty:
        print(file=sys.stderr)
    bank = build_bank(ds, codec, model, alphas) if alphas else None
    bundle = save_bundle(args.out, ds, config, codec, model, acc, bank=bank)
    bank_text = f" bank={','.join(map(str, alphas))}" if alphas else ""
    print(f"bundle {args.out}: dataset={ds.name} dims={config.dims} held-out accuracy={acc:.4f}"
          f"{bank_text} hash={bundle.hash}")
    return 0
