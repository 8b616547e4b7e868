"""`python -m extract`: fill the HDF5 feature cache of a dataset (``make extract``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from core.config import add_fields
from extract.litert import RUNTIMES
from extract.pipeline import ENGINES, INPUT_MODES, TRANSPORTS, ExtractConfig, run_extract

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def build_parser() -> argparse.ArgumentParser:
    from data_manifests.loader import DATASETS
    from extract.faces import DETECTOR_MODELS

    p = argparse.ArgumentParser(
        prog="python -m extract",
        description="Decode every frame, find the face, embed it with a Keras CNN, write <cache-dir>/<dataset>/"
        "<backbone>.h5. Resumable: run it again after an interruption to finish what is missing.",
    )
    add_fields(
        p,
        ExtractConfig,
        choices={
            "dataset": DATASETS,
            "input": INPUT_MODES,
            "detector": DETECTOR_MODELS,
            "transport": TRANSPORTS,
            "precision": PRECISIONS,
            "runtime": RUNTIMES,
            "engine": ENGINES,
        },
    )
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = ExtractConfig(**vars(build_parser().parse_args(argv)))
    try:
        summary = run_extract(cfg)
    except ValueError as err:  # bad dataset, backbone or cache: one line that names the file and the fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = []
    if "cache" in summary:
        failed += summary["failed"]
        print(
            f"{summary['cache']}: {summary['done']} videos done, {summary['skipped_done']} already cached, "
            f"{len(summary['failed'])} failed, {len(summary['missing_input'])} without input; {summary['frames']} "
            f"frames, {summary['faces']} faces ({summary['face_hit_rate']:.1%}); {summary['seconds']} s, "
            f"{summary['frames_per_s']} frames/s"
        )
        if "crops" in summary:
            print(f"face crops for make finetune: {summary['crops']}")
    if "audio" in summary:
        audio = summary["audio"]
        failed += audio["failed"]
        print(
            f"{audio['cache']}: {audio['done']} samples done, {audio['skipped_done']} already cached, "
            f"{len(audio['failed'])} failed, {len(audio['missing_input'])} without input; {audio['frames']} frames, "
            f"{audio['with_audio']} with audio; {audio['audio_seconds']:.0f} s of audio in {audio['seconds']} s "
            f"({audio['x_real_time']}x real time)"
        )
    for item in failed:
        print(f"failed: {item['reason']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    # Skips the interpreter's teardown: with TensorFlow loaded it takes about 1 s of a 7 s run and
    # writes nothing of ours (every file is closed, the workers are joined, the logs flushed here).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
