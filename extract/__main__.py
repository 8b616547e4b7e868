"""`python -m extract`: fill the HDF5 feature cache of a dataset (``make extract``)."""

from __future__ import annotations

import argparse
import logging
import sys

from extract.pipeline import INPUT_MODES, TRANSPORTS, ExtractConfig, run_extract


def build_parser() -> argparse.ArgumentParser:
    from data_manifests.loader import DATASETS
    from extract.backbones import BACKBONES
    from extract.faces import DETECTOR_MODELS

    d = ExtractConfig()
    p = argparse.ArgumentParser(
        prog="python -m extract",
        description="Decode every frame, find the face, embed it with a Keras CNN, write <cache-dir>/<dataset>/"
                    "<backbone>.h5. Resumable: run it again after an interruption to finish what is missing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default=d.dataset, choices=DATASETS, help="dataset manifest (DATASET)")
    p.add_argument("--data-root", default=None, help="where the dataset lives (DATA_ROOT); default data/<dataset>")
    p.add_argument("--backbone", default=d.backbone,
                   help=f"BACKBONE: one of {', '.join(BACKBONES)}, or file:<model.keras>")
    p.add_argument("--weights", default=d.weights, help="local weights file for keras.applications backbones "
                   "(WEIGHTS); without it they are randomly initialised")
    p.add_argument("--embedding-layer", default=d.embedding_layer, help="layer whose output is the embedding "
                   "(file: backbones); default: the layer before the classifier")
    p.add_argument("--cache-dir", default=d.cache_dir, help="CACHE_DIR")
    p.add_argument("--input", default=d.input, choices=INPUT_MODES,
                   help="frames: pre-cropped folders; video: decode + BlazeFace; auto: the dataset's default")
    p.add_argument("--detector", default=d.detector, choices=DETECTOR_MODELS, help="BlazeFace model (range)")
    p.add_argument("--min-score", type=float, default=d.min_score, help="face detection threshold")
    p.add_argument("--margin", type=float, default=d.margin, help="crop margin around the face box")
    p.add_argument("--align", action="store_true", help="rotate crops so the eyes are level")
    p.add_argument("--detect-every", type=int, default=d.detect_every,
                   help="DETECT_EVERY: video mode, detect faces every N frames and carry them between with "
                        "optical flow (10: the detector runs on 10-25%% of the frames; docs/benchmarks.md); "
                        "1: every frame")
    p.add_argument("--save-crops", action="store_true",
                   help="SAVE_CROPS=1: video mode, also store every face crop (JPEG) in <cache-dir>/<dataset>/"
                        "<backbone>.crops.h5, so that make finetune reads them instead of detecting again")
    p.add_argument("--crop-size", type=int, default=d.crop_size, help="side of the saved crops, in pixels")
    p.add_argument("--transport", default=d.transport, choices=TRANSPORTS,
                   help="how crops reach the inference loop: shm (a shared-memory ring per worker) or queue "
                        "(pickled); shm falls back to queue when /dev/shm is too small")
    p.add_argument("--workers", type=int, default=d.workers, help="decode/detect processes (0: one per core)")
    p.add_argument("--batch", type=int, default=d.batch, help="crops per inference call")
    p.add_argument("--precision", default=d.precision, choices=("auto", "float32", "bfloat16", "float16"),
                   help="auto: mixed bfloat16 on a GPU with the jax backend, else float32")
    p.add_argument("--limit", type=int, default=d.limit, help="extract at most this many videos (0: all)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    values = vars(args)
    values["data_root"] = values["data_root"] or f"data/{args.dataset}"
    cfg = ExtractConfig(**values)
    try:
        summary = run_extract(cfg)
    except ValueError as err:  # bad dataset, backbone or cache: one line that names the file and the fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = summary["failed"]
    print(f"{summary['cache']}: {summary['done']} videos done, {summary['skipped_done']} already cached, "
          f"{len(failed)} failed, {len(summary['missing_input'])} without input; {summary['frames']} frames, "
          f"{summary['faces']} faces ({summary['face_hit_rate']:.1%}); {summary['seconds']} s, "
          f"{summary['frames_per_s']} frames/s")
    if "crops" in summary:
        print(f"face crops for make finetune: {summary['crops']}")
    for item in failed:
        print(f"failed: {item['reason']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
