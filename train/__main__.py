"""`python -m train`: train a sequence model on the cached embeddings (``make train``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from train.config import TrainConfig


def _listing(title: str, registry, describe) -> str:
    return f"{title}:\n" + "\n".join(f"  {name:<12} {describe(entry)}" for name, entry in registry.items())


def build_parser() -> argparse.ArgumentParser:
    from data_manifests.loader import DATASETS
    from train.models import MODELS
    from train.rebalance import REBALANCE
    from train.tasks import TASKS

    d = TrainConfig()
    epilog = "\n\n".join([
        _listing("models (--model)", MODELS, lambda e: e.description),
        _listing("tasks (--task)", TASKS, lambda e: e.description),
        _listing("rebalance (--rebalance, training split only)", REBALANCE, lambda e: e.description),
        "datasets (--dataset): " + ", ".join(DATASETS),
        "Writes <runs-dir>/<run_id>/ (docs/run_format.md): config.json, history.csv, model.keras, "
        "predictions_validation.csv, metrics.json, label_distribution.json, logs/.",
    ])
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Train a sequence model on the HDF5 embedding cache (<cache-dir>/<dataset>/<backbone>.h5) "
                    "and score it on the validation split.",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=d.dataset, choices=DATASETS, help="DATASET (default %(default)s)")
    p.add_argument("--data-root", default=d.data_root, help="DATA_ROOT (default data/<dataset>)")
    p.add_argument("--backbone", default=d.backbone, help="BACKBONE: the cache to read (default %(default)s)")
    p.add_argument("--model", default=d.model, choices=list(MODELS), help="MODEL (default %(default)s)")
    p.add_argument("--task", default=d.task, choices=list(TASKS), help="TASK (default %(default)s)")
    p.add_argument("--cache-dir", default=d.cache_dir, help="CACHE_DIR (default %(default)s)")
    p.add_argument("--runs-dir", default=d.runs_dir, help="RUNS_DIR (default %(default)s)")
    p.add_argument("--rebalance", default=d.rebalance, choices=list(REBALANCE), help="REBALANCE (default %(default)s)")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help="frames per window (default %(default)s)")
    p.add_argument("--stride", type=int, default=d.stride, help="training window step (0: seq-len/2)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="at most this many epochs (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="windows per batch (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s)")
    p.add_argument("--patience", type=int, default=d.patience,
                   help="EarlyStopping: epochs without a better validation metric (default %(default)s)")
    p.add_argument("--layers", type=int, default=d.layers, help="recurrent/dense layers (default %(default)s)")
    p.add_argument("--units", type=int, default=d.units, help="units per layer (default %(default)s)")
    p.add_argument("--dropout", type=float, default=d.dropout, help="dropout between layers (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="SEED (default %(default)s)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="subjects held out when the dataset has no validation split (default %(default)s)")
    p.add_argument("--undersample-cap", type=float, default=d.undersample_cap,
                   help="undersample: keep at most cap x the rarest class count (default %(default)s)")
    p.add_argument("--va-bins", type=int, default=d.va_bins, help="VA histogram bins per axis (default %(default)s)")
    p.add_argument("--eri-loss", default=d.eri_loss, choices=("mse", "pearson"), help="eri loss (default %(default)s)")
    p.add_argument("--jit-compile", default=d.jit_compile, choices=("auto", "on", "off"),
                   help="XLA for the train step (default %(default)s)")
    p.add_argument("--run-name", default=d.run_name, help="run folder name (default: generated run id)")
    p.add_argument("--verbose", type=int, default=d.verbose, choices=(0, 1, 2), help="Keras fit verbosity")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    cfg = TrainConfig(**vars(args))
    from train.run import run_training

    try:
        run_dir = run_training(cfg)
    except ValueError as err:  # bad dataset, cache, labels or setting: one line naming the file and the fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(json.dumps({"run": str(run_dir), **{k: v for k, v in metrics.items() if k == "f1_macro" or not k.startswith("f1_")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
