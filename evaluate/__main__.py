"""`python -m evaluate`: the report over every run (``make report``), a run's predictions for a
split in the ABAW submission format (``make predict``), and a run on any video (``make analyze``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    from core.config import add_fields
    from data_manifests.schema import SPLITS
    from evaluate import NO_FACE_POLICIES
    from evaluate.analyze import AnalyzeConfig

    p = argparse.ArgumentParser(
        prog="python -m evaluate",
        description="Evaluate trained runs (docs/run_format.md): an HTML/Markdown report over every run, "
        "or one run's predictions for a whole split in the ABAW submission format.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{report,predict,analyze}")
    r = sub.add_parser(
        "report",
        help="every run of RUNS_DIR -> REPORT_DIR/index.html and summary.md",
        description="Write <report-dir>/index.html (opens from disk, no network) and summary.md: "
        "the table of runs, temporal models vs the frame/avgpool baselines, the feature "
        "caches, and per run the training curves, label distributions, confusion "
        "matrices and valence/arousal time plots (PNG files in <report-dir>/runs/).",
    )
    r.add_argument("--runs-dir", default="runs", help="RUNS_DIR: one folder per run (default %(default)s)")
    r.add_argument("--report-dir", default="reports", help="REPORT_DIR (default %(default)s)")
    q = sub.add_parser(
        "predict",
        help="a run's predictions for every frame of a split (ABAW format + per-video CSV)",
        description="Predict every frame of SPLIT with <runs-dir>/<run>/model.keras and write "
        "<runs-dir>/<run>/predictions_<split>/: abaw_<task>.txt (ABAW submission "
        "format), per_video/<sample>.csv and summary.json.",
        epilog="Frames without a face (--no-face): 'model' keeps the model's output at the masked "
        "frame (recurrent models fill it from context, avgpool gives the window's "
        "prediction); 'nearest' copies the nearest face frame's prediction; 'auto' uses "
        "nearest for the per-frame 'frame' model and model for the others.",
    )
    q.add_argument("--run", required=True, help="RUN: a run id in --runs-dir (or a run folder)")
    q.add_argument("--split", required=True, choices=SPLITS, help="SPLIT to predict")
    q.add_argument("--runs-dir", default="runs", help="RUNS_DIR (default %(default)s)")
    q.add_argument("--data-root", default=None, help="DATA_ROOT (default: the run's data_root)")
    q.add_argument("--cache-dir", default=None, help="CACHE_DIR (default: the cache the run was trained on)")
    # Checked by predict_run, which lists the valid names: importing evaluate.predict here would load
    # the deep-learning backend for `report` and --help too.
    q.add_argument(
        "--no-face",
        default="auto",
        metavar="{" + ",".join(NO_FACE_POLICIES) + "}",
        help="prediction for frames without a face (default %(default)s; see below)",
    )
    q.add_argument("--batch-size", type=int, default=None, help="windows per batch (default: the run's)")
    a = sub.add_parser(
        "analyze",
        help="a run on any video file or folder -> ANALYSIS_DIR/<video>/ (frames.csv, overlay.mp4, timeline.png)",
        description="Extract VIDEO with the run's own backbone and face settings, predict every frame "
        "with the run's model and write <analysis-dir>/<video>/: frames.csv, overlay.mp4, timeline.png, "
        "summary.json. A folder is analysed in one run; videos already analysed by this run are skipped.",
    )
    add_fields(a, AnalyzeConfig, choices={"no_face": NO_FACE_POLICIES})
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "report":
            from evaluate.report import build_report

            paths = build_report(args.runs_dir, args.report_dir)
            print(json.dumps({k: str(v) for k, v in paths.items()}))
        elif args.command == "analyze":
            return _analyze(args)
        else:
            from evaluate.predict import predict_run

            summary = predict_run(
                args.run,
                args.split,
                runs_dir=args.runs_dir,
                data_root=args.data_root,
                cache_dir=args.cache_dir,
                no_face=args.no_face,
                batch_size=args.batch_size,
            )
            print(json.dumps(summary))
    except (ValueError, FileNotFoundError) as err:  # bad run, split, dataset or cache: one line with the fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _analyze(args) -> int:
    from evaluate.analyze import AnalyzeConfig, analyze

    values = {k: v for k, v in vars(args).items() if k != "command"}
    result = analyze(AnalyzeConfig(**values))
    for video in result["videos"]:
        print(
            f"{video['video']}: {video['frames']} frames ({video['video_seconds']} s), {video['faces']} with a face "
            f"-> {video['folder']}"
        )
    for problem in result["problems"]:
        print(f"error: {problem}", file=sys.stderr)
    done = sum(v["frames"] for v in result["videos"])
    print(
        f"analyzed {len(result['videos'])} videos ({len(result['skipped'])} already done), {done} frames in "
        f"{result['seconds']} s ({result['frames_per_s']} frames/s); {len(result['problems'])} could not be read"
    )
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
