"""``python -m finetune train|distill|joint``: fine-tune a backbone on face crops, distil a
fine-tuned one, or train a backbone and a GRU together on clips (end to end).

Every flag mirrors a field of ``finetune.config.FinetuneConfig`` / ``DistillConfig`` /
``finetune.joint.JointConfig``; a ``train`` or ``distill`` run folder's ``model.keras`` is a
stage-one backbone (``make extract BACKBONE=file:<run>/model.keras``); a ``joint`` run folder is
a stage-two run folder that ``make report`` reads.
"""

from __future__ import annotations

import argparse
import logging
import sys

from core.config import add_fields
from finetune.config import INITS, DistillConfig, FinetuneConfig, frame_tasks


def build_parser() -> argparse.ArgumentParser:
    from extract.backbones import BACKBONES
    from train.rebalance import REBALANCE

    backbones = ", ".join(sorted(BACKBONES))
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__, formatter_class=raw)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train",
        help="fine-tune a backbone + head on the dataset's face crops",
        formatter_class=raw,
        description=f"Backbones: {backbones}. Tasks: {', '.join(frame_tasks())}. Inits: {', '.join(INITS)}. "
        f"Rebalancing (training split only): {', '.join(REBALANCE)}.",
    )
    add_fields(train, FinetuneConfig)
    distill = sub.add_parser(
        "distill",
        help="train a small student on a fine-tuned teacher's softened outputs (Hinton et al.)",
        formatter_class=raw,
        description=f"Students: {backbones}. Tasks: expr, au (default: the teacher's). "
        f"Rebalancing: {', '.join(REBALANCE)}.",
    )
    add_fields(distill, DistillConfig)
    from finetune.joint import JointConfig
    from train.models import MODELS

    joint = sub.add_parser(
        "joint",
        help="train a backbone and a stage-two RNN together on clips of face crops (Kollias et al. 2017)",
        formatter_class=raw,
        description=f"Backbones: {backbones}. Models: {', '.join(MODELS)}. Tasks: {', '.join(frame_tasks())}. "
        f"Rebalancing (training split only): {', '.join(REBALANCE)}.",
    )
    add_fields(joint, JointConfig, skip=("train_frames", "val_frames"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if command == "train":
            from finetune.run import run_finetune

            run_dir = run_finetune(FinetuneConfig(**args))
        elif command == "joint":
            from finetune.joint import JointConfig, run_joint

            run_dir = run_joint(JointConfig(**args))
            print(f"run folder: {run_dir}\nmake report puts it beside the two-stage runs of {args['backbone']}")
            return 0
        else:
            from finetune.distill import run_distill

            run_dir = run_distill(DistillConfig(**args))
    except ValueError as err:  # ConfigError, DatasetError and bad files: one line naming the fix
        print(f"python -m finetune {command}: {err}", file=sys.stderr)
        return 2
    print(f"run folder: {run_dir}\nuse it in stage one: make extract BACKBONE=file:{run_dir}/model.keras")
    return 0


if __name__ == "__main__":
    sys.exit(main())
