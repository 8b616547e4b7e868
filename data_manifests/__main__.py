"""Summarise a dataset as the loader sees it: ``python -m data_manifests --dataset NAME --root DIR``.

Prints samples per split and task, labelled frames, the fraction of valid labels and the class
counts, so a new download can be checked before extraction. A malformed dataset prints the
loader's one-line error (file, line, what was expected) and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np
import pandas as pd

from data_manifests.loader import DATASETS, load_dataset, load_manifest, samples
from data_manifests.schema import LABELS, SPLITS, DatasetError


def _per_split(table: pd.DataFrame, values: pd.Series, how: str) -> pd.DataFrame:
    """task x split pivot of ``values`` (aggregated with ``how``), splits in schema order."""
    frame = pd.DataFrame({"task": table["task"], "split": table["split"], "value": values})
    pivot = frame.pivot_table(index="task", columns="split", values="value", aggfunc=how, fill_value=0)
    return pivot.reindex(
        index=[t for t in LABELS if t in pivot.index], columns=[s for s in SPLITS if s in pivot.columns]
    )


def class_counts(table: pd.DataFrame) -> list[str]:
    """One line per task: valid-label counts per class, positives per AU, or mean per dimension."""
    lines = []
    for task in [t for t in LABELS if t in set(table["task"])]:
        group, spec = table[table["task"] == task], LABELS[task]
        valid = [np.atleast_1d(v) for v in group["valid"]]
        labels = [np.asarray(lab).reshape(len(v), -1) for lab, v in zip(group["labels"], valid)]
        kept = np.concatenate([lab[v] for lab, v in zip(labels, valid)]) if labels else None
        if kept is None or not len(kept):
            lines.append(f"  {task}: no valid labels")
            continue
        if spec.kind == "class":
            counts = np.bincount(kept[:, 0].astype(np.int64), minlength=len(spec.names))
            parts = [f"{n} {c}" for n, c in zip(spec.names, counts)]
            lines.append(f"  {task} (valid labels per class): " + ", ".join(parts))
        elif spec.kind == "multilabel":
            parts = [f"{n} {p:.1%}" for n, p in zip(spec.names, kept.mean(axis=0))]
            lines.append(f"  {task} (positive rate): " + ", ".join(parts))
        else:
            parts = [f"{n} {m:+.3f}±{s:.3f}" for n, m, s in zip(spec.names, kept.mean(axis=0), kept.std(axis=0))]
            lines.append(f"  {task} (mean±std): " + ", ".join(parts))
    return lines


def summarize(table: pd.DataFrame) -> str:
    """The text printed by the command line for one sample table.

    Example::

        print(summarize(load_dataset("synthetic", "data/synthetic")))
    """
    per_sample = samples(table)
    n_labels = table["frame_index"].map(lambda f: 1 if f is None else len(f))
    n_valid = table["valid"].map(lambda v: int(np.sum(v)))
    fraction = (_per_split(table, n_valid, "sum") / _per_split(table, n_labels, "sum")).round(3)
    out = [
        f"samples: {len(per_sample)} from {per_sample['video'].nunique()} videos and "
        f"{per_sample['subject'].nunique()} subjects; "
        f"{int((per_sample['frames_dir'] != '').sum())} with a frames folder, "
        f"{int((per_sample['media_path'] != '').sum())} with a media file",
        "",
        "samples per split:",
        _per_split(table, table["sample_id"], "count").to_string(),
        "",
        "labelled frames per split (1 per clip for clip tasks):",
        _per_split(table, n_labels, "sum").to_string(),
        "",
        "valid-label fraction:",
        fraction.to_string(na_rep="-"),
        "",
        "label counts (valid labels only):",
        *class_counts(table),
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    width = max(map(len, DATASETS))
    parser = argparse.ArgumentParser(
        prog="python -m data_manifests",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load a dataset through its manifest (data_manifests/<NAME>.toml) and print a "
        "summary.\n\ndatasets:\n" + "\n".join(f"  {n:<{width}}  {load_manifest(n).description}" for n in DATASETS),
    )
    parser.add_argument(
        "--dataset", required=True, choices=DATASETS, metavar="NAME", help=f"one of: {', '.join(DATASETS)}"
    )
    parser.add_argument("--root", help="dataset root folder (default: data/<NAME>, as DATA_ROOT)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    root = args.root or f"data/{args.dataset}"
    try:
        table = load_dataset(args.dataset, root)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    manifest = load_manifest(args.dataset)
    print(f"{args.dataset}: {manifest.description}")
    print(f"root: {root}  layout: {manifest.layout}  default input: {manifest.input}")
    print(summarize(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
