"""`python -m train`: train a sequence model on the cached embeddings (``make train``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from core.config import add_fields
from core.run_folder import RunFolder
from train.config import TrainConfig


def _listing(title: str, registry, describe) -> str:
    return f"{title}:\n" + "\n".join(f"  {name:<12} {describe(entry)}" for name, entry in registry.items())


def build_parser() -> argparse.ArgumentParser:
    from core.tasks import TASKS
    from data_manifests.loader import DATASETS
    from train.models import MODELS
    from train.rebalance import REBALANCE

    epilog = "\n\n".join(
        [
            _listing("models (--model)", MODELS, lambda e: e.description),
            _listing("tasks (--task)", TASKS, lambda e: e.description),
            _listing("rebalance (--rebalance, training split only)", REBALANCE, lambda e: e.description),
            "datasets (--dataset): " + ", ".join(DATASETS),
            "Writes <runs-dir>/<run_id>/ (docs/run_format.md): config.json, history.csv, model.keras, "
            "predictions_validation.csv, metrics.json, label_distribution.json, logs/.",
        ]
    )
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Train a sequence model on the HDF5 embedding cache (<cache-dir>/<dataset>/<backbone>.h5) "
        "and score it on the validation split.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_fields(
        p,
        TrainConfig,
        choices={
            "dataset": DATASETS,
            "model": MODELS,
            "task": TASKS,
            "rebalance": REBALANCE,
            "eri_loss": ("mse", "pearson"),
            "jit_compile": ("auto", "on", "off"),
            "distribution": ("none", "data"),
            "verbose": (0, 1, 2),
        },
    )
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
    metrics = RunFolder(run_dir).read_metrics()
    shown = {k: v for k, v in metrics.items() if k in ("f1_macro", "f1_present") or not k.startswith("f1_")}
    print(json.dumps({"run": str(run_dir), **shown}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
