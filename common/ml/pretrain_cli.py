"""``semalign pretrain``: fit PCA and pre-train the MLP on a dataset's pretrain split; write a bundle.

Defaults come from the dataset's spec (``DatasetSpec.pretrain``); flags override some of them.
It shows its progress (minutes on MNIST with a bank) and replaces an existing bundle only
with ``--force``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from common.data.spec import DATASET_NAMES, get_spec
from common.errors import BundleError
from common.ml.bundle import META_FILE


def check_out(out: Path, force: bool) -> None:
    """BundleError unless writing a bundle to ``out`` destroys nothing it was not asked to.

    Without ``force`` ``out`` must be absent or an empty directory; with it, ``out`` may hold a
    bundle (replaced), but never anything else (a typo for ``--out ~`` must not empty a home).
    """
    if out.exists() and not out.is_dir():
        raise BundleError(f"--out {out} is a file, not a bundle directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    meta = out / META_FILE
    if not meta.is_file():
        raise BundleError(f"--out {out} is a non-empty directory that holds no bundle ({META_FILE}); "
                          "refusing to replace it: choose another --out")
    if force:
        return
    try:
        held = json.loads(meta.read_text())
        what = f"a bundle of dataset {held.get('dataset')!r}, hash {str(held.get('hash'))[:12]}"
    except (OSError, ValueError, AttributeError):
        what = "a bundle"
    raise BundleError(f"--out {out} already holds {what}: pass --force to replace it, or choose another --out")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="semalign pretrain", description="Fit PCA and pre-train the MLP; write a bundle.")
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES)
    p.add_argument("--data-dir", type=Path, help="directory with the IDX files (mnist, fashion-mnist)")
    p.add_argument("--download", action="store_true", help="fetch missing dataset files from public mirrors")
    p.add_argument("--dims", type=int, help="PCA components kept (the largest alpha)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--force", action="store_true", help="replace the bundle already in --out")
    p.add_argument("--bank", metavar="ALPHAS",
                   help="distil one LoRA adapter per alpha into the bundle, e.g. 150,100,60,40,20,10")
    args = p.parse_args(argv)
    check_out(args.out, args.force)  # before minutes of work, not after
    # Imported after parsing: --help costs no torch.
    from common.data.spec import load_dataset
    from common.log import Progress
    from common.ml.bank import parse_alphas
    from common.ml.bundle import PretrainConfig
    from common.ml.pretrain import build_bank, pretrain, save_bundle

    base = get_spec(args.dataset).pretrain
    config = PretrainConfig(
        **{**asdict(base), "dims": args.dims or base.dims, "epochs": args.epochs or base.epochs, "seed": args.seed}
    )
    alphas = parse_alphas(args.bank, config.dims) if args.bank else ()
    print(f"pretrain: loading {args.dataset}", file=sys.stderr, flush=True)
    ds = load_dataset(args.dataset, args.data_dir, download=args.download)
    print(f"pretrain: PCA to {config.dims} dims on {len(ds.pretrain.y)} images, then {config.epochs} epochs"
          + (f", then {len(alphas)} bank adapters" if alphas else ""), file=sys.stderr, flush=True)
    epochs = Progress("pretrain epochs", config.epochs)
    codec, model, acc = pretrain(ds, config, on_epoch=lambda epoch, loss: epochs.update(epoch + 1, f"loss {loss:.4f}"))
    epochs.close()
    bank = None
    if alphas:
        adapters = Progress("bank adapters", len(alphas))
        bank = build_bank(ds, codec, model, alphas,
                          on_alpha=lambda done, alpha: adapters.update(done, f"alpha {alpha}"))
        adapters.close()
    check_out(args.out, args.force)  # again: something may have appeared there meanwhile
    bundle = save_bundle(args.out, ds, config, codec, model, acc, bank=bank)
    bank_text = f" bank={','.join(map(str, alphas))}" if alphas else ""
    print(f"bundle {args.out}: dataset={ds.name} dims={config.dims} held-out accuracy={acc:.4f}"
          f"{bank_text} hash={bundle.hash}")
    return 0
