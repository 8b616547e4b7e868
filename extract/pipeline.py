"""Stage one: a dataset's samples -> worker processes (decode, detect, crop) -> one batched
inference loop -> per-video shards -> the HDF5 cache.

Read top to bottom: :class:`ExtractConfig`, :func:`run_extract` and :func:`extract_table`
(resumability, the summary); what is left to do is :mod:`extract.plan`, the processes
:mod:`extract.pool`, the loop over the workers' messages :class:`extract.job_loop.JobLoop`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass

from core.config import DEFAULT_BACKBONE, NO_BACKBONE, DataFields
from core.registry import ConfigError
from extract.cache import CacheLock, CacheMeta, cache_path, merge_shards, parts_dir_for, summary_path
from extract.job_loop import JobLoop
from extract.litert import resolve_runtime, runtime_for_cache
from extract.plan import Plan, complete_cache, face_settings, plan_extraction, summary_head
from extract.pool import CropFiles, WorkerPool
from extract.worker import FaceSettings

log = logging.getLogger(__name__)

INPUT_MODES = ("auto", "frames", "video")
TRANSPORTS = ("shm", "queue")
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class ExtractConfig(DataFields):
    """Everything a run depends on; saved, resolved, in the run summary beside the cache.
    ``python -m extract``'s flags are generated from these fields (``core.config.add_fields``).

    Args:
        backbone: BACKBONE: a ``BACKBONES`` name or ``file:<model.keras>``; ``none``: no visual features
            (with ``audio``: audio only).
        audio: AUDIO: also extract audio features, pooled per video frame, into ``audio-<name>.h5``
            (``extract.audio``: ``logmel``, ``mfcc``, ``egemaps``, or ``file:<model.keras>``, a Keras
            audio model on log-mel patches: ``extract.audio_model``); empty: none.
        weights: WEIGHTS: local weights file for the keras.applications backbones; without it they
            are randomly initialised.
        embedding_layer: the layer whose output is the embedding (``file:`` backbones); empty: the
            layer before the classifier.
        input: ``frames`` (pre-cropped folders), ``video`` (decode and detect), or ``auto``
            (the manifest's default).
        detector: the BlazeFace model (range): ``full``, ``short`` or ``full+short`` (short range on
            the frames where full range found nobody).
        min_score: face detection threshold.
        margin: crop margin around the face box, as a share of its side; -1: the backbone's crop
            policy (``extract.backbones.CropPolicy``: fer 0, the ImageNet backbones 0.25).
        align: rotate crops so the eyes are level (also on when the backbone's crop policy aligns).
        detect_every: DETECT_EVERY: video mode, run the face detector every this many frames and
            interpolate the faces between two keyframes that agree, detecting again in between where
            they do not (``extract.keyframes``; 10, the default: the detector runs on 11-25% of the
            frames, the same face-hit rate and box IoU 0.967 of detection on every frame on the
            real test media, docs/benchmarks.md); 1: detect on every frame.
        save_crops: SAVE_CROPS=1: video mode, also store every face crop, JPEG-encoded, in the
            sibling ``<backbone>.crops.h5`` (``extract.crops``), for fine-tuning.
        crop_size: the side of the saved crops, in pixels.
        transport: how crops reach the inference loop: ``shm`` (a shared-memory ring per worker,
            ``extract.transport``) or ``queue`` (pickled); shm falls back to queue when /dev/shm is small.
        workers: decode/detect processes; 0 means one per core (``ENGINE=ray``: decoder actors; 0, one
            per CPU of the cluster the embedders leave).
        batch: crops per inference call (every call has this shape: the last one is padded).
        chunk: frames a worker sends per message.
        precision: ``auto`` (mixed bfloat16 on a GPU with the jax backend, else float32),
            ``float32``, ``bfloat16`` or ``float16``.
        runtime: RUNTIME: what runs the backbone: ``keras``, ``litert`` (its LiteRT copy, exported once per
            machine, no TensorFlow: ``extract.litert``), or ``auto``: litert on the TensorFlow backend at
            float32 (the CPU path), else keras.
        models_dir: where the LiteRT copies live; empty: ``~/.cache/emotion-video/models``
            (``$XDG_CACHE_HOME`` first).
        limit: extract at most this many videos (0: all).
        refresh: extract again the cached videos whose source changed since (their fingerprint,
            ``extract.fingerprint``, differs); without it they are listed and kept.
        engine: ENGINE: ``local`` (worker processes on this machine) or ``ray`` (a Ray cluster, the one at
            ``RAY_ADDRESS`` or a local one: ``extract.ray_engine``); both write the same cache.
    """

    backbone: str = DEFAULT_BACKBONE
    audio: str = ""
    weights: str = ""
    embedding_layer: str = ""
    input: str = "auto"
    detector: str = "full+short"
    min_score: float = 0.5
    margin: float = -1.0
    align: bool = False
    detect_every: int = 10
    save_crops: bool = False
    crop_size: int = 112
    transport: str = "shm"
    workers: int = 0
    batch: int = 256
    chunk: int = 64
    precision: str = "auto"
    runtime: str = "auto"
    models_dir: str = ""
    limit: int = 0
    refresh: bool = False
    engine: str = "local"

    def resolved(self) -> "ExtractConfig":
        """The config with ``data_root`` and the backbone's crop policy filled in (what the run summary records)."""
        from extract.backbones import crop_policy

        if self.backbone == NO_BACKBONE:
            return dataclasses.replace(self, data_root=self.root(), margin=max(self.margin, 0.0))
        policy = crop_policy(self.backbone)
        margin = policy.margin if self.margin == -1.0 else self.margin
        return dataclasses.replace(self, data_root=self.root(), margin=margin, align=self.align or policy.align)

    def validate(self) -> "ExtractConfig":
        """Checks every numeric option's range (and the worker count against this machine); returns self."""
        ceiling = max_workers()
        checks = [
            ("batch", self.batch >= 1, "must be >= 1"),
            ("workers", self.workers >= 0, "must be >= 0 (0: one per core)"),
            (
                "workers",
                self.workers <= ceiling,
                f"must be at most {ceiling} on this machine ({os.cpu_count()} "
                f"cores, {_available_gb():.1f} GB available, ~{WORKER_MB} MB per worker)",
            ),
            ("chunk", self.chunk >= 1, "must be >= 1"),
            ("detect_every", self.detect_every >= 1, "must be >= 1 (1: detect on every frame)"),
            ("min_score", 0 <= self.min_score <= 1, "must be in [0, 1]"),
            ("margin", 0 <= self.margin <= 2, "must be in [0, 2] (a share of the face side) or -1 (the backbone's)"),
            ("crop_size", self.crop_size >= 8, "must be >= 8 pixels"),
            ("limit", self.limit >= 0, "must be >= 0 (0: all)"),
            ("transport", self.transport in TRANSPORTS, f"must be one of {', '.join(TRANSPORTS)}"),
            ("engine", self.engine in ENGINES, f"must be one of {', '.join(ENGINES)}"),
            ("save_crops", not (self.save_crops and self.engine == "ray"), "runs on ENGINE=local only (not ray)"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} {why}, got {getattr(self, name)!r}")
        return self


WORKER_MB = 300  # a decode/detect worker peaks at 172 MB (docs/benchmarks.md); room for larger frames


def _available_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return kb / 2**20
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") / 2**30


def max_workers() -> int:
    """The most decode/detect workers this machine holds: 4 per core, and what memory allows."""
    by_memory = int(_available_gb() * 1024 // WORKER_MB)
    return max(1, min(4 * (os.cpu_count() or 1), by_memory))


def _meta(backbone, settings: FaceSettings, mode: str) -> CacheMeta:
    from extract.faces import FACE_POLICY

    return CacheMeta(
        backbone=backbone.name,
        embedding_dim=backbone.embedding_dim,
        input_size=tuple(backbone.input_size),
        preprocessing=backbone.preprocessing,
        weights_sha256=backbone.weights_sha256,
        embedding_layer=backbone.embedding_layer,
        face_policy=FACE_POLICY,
        detector=settings.describe(mode),
        keras_version=backbone.keras_version,
        backend=backbone.backend,
        backend_version=backbone.backend_version,
    )


def run_extract(cfg: ExtractConfig) -> dict:
    """Extracts every sample of ``cfg.dataset`` not yet in the cache; returns the run summary.

    Killed at any moment, a second call finishes only what is missing: finished videos are kept as
    shards and folded in first, half-written ones are discarded and redone.
    """
    from data_manifests.loader import load_dataset, load_manifest, samples
    from extract.backbones import check_name

    start = time.perf_counter()
    cfg = cfg.resolved().validate()
    if cfg.backbone == NO_BACKBONE and not cfg.audio:
        raise ConfigError("BACKBONE=none extracts nothing: add AUDIO=logmel (or mfcc, egemaps) for audio only")
    if cfg.audio:
        from extract.audio import check_audio_name

        check_audio_name(cfg.audio)  # a wrong name fails before any video is read
    if cfg.backbone != NO_BACKBONE:
        check_name(cfg.backbone)
    manifest = load_manifest(cfg.dataset)
    table = samples(load_dataset(cfg.dataset, cfg.data_root))
    mode = manifest.input if cfg.input == "auto" else cfg.input
    if cfg.backbone == NO_BACKBONE:
        return {"audio": _audio(cfg, table, manifest)}
    if cfg.save_crops and mode != "video":
        raise ValueError(
            f"--save-crops stores the crops cut from videos, but {cfg.dataset} is read in '{mode}' "
            f"mode, whose cropped_aligned frames fine-tuning reads directly; add --input video "
            f"(INPUT=video) to save crops from the videos"
        )
    if not cfg.audio:
        return extract_table(cfg, table, mode, start)
    from extract.audio_run import AudioRun

    # Video workers extract the audio of the videos they decode, in the same pass; the other
    # recordings (WAV files, frames mode) go to one process beside them (logmel runs at about 500x
    # real time per core, docs/benchmarks.md), so that audio does not add to the run's time.
    with AudioRun(cfg, table, manifest.options.get("fps"), workers=1) as audio:
        summary = extract_table(cfg, table, mode, start, audio=audio)
    summary["audio"] = audio.summary
    summary["seconds_with_audio"] = round(time.perf_counter() - start, 2)
    return summary


def _audio(cfg: ExtractConfig, table, manifest, workers: int = 0) -> dict:
    from extract.audio_run import run_audio

    return run_audio(cfg, table, fps=manifest.options.get("fps"), workers=workers)


def extract_table(cfg: ExtractConfig, table, mode: str, start: float | None = None, audio=None) -> dict:
    """Extracts the samples of ``table`` (``data_manifests.schema.COLUMNS``) into
    ``<cache_dir>/<dataset>/<backbone>.h5``: ``run_extract`` for a dataset, ``make analyze`` for
    videos of none (``evaluate.analyze``). Returns the run summary.

    For a registry backbone the jobs go to the workers before the backbone loads (its crop size is
    in the registry), so decoding and detection start while the backend imports. ``audio``: the
    run's ``extract.audio_run.AudioRun``; the local engine's workers extract the audio of the videos
    they decode (``AudioRun.attach``), the rest runs beside them.
    """
    from extract.backbones import BACKBONES

    start = time.perf_counter() if start is None else start
    cfg = cfg.resolved().validate()
    out = cache_path(cfg.cache_dir, cfg.dataset, cfg.backbone)
    with CacheLock(out):
        plan = plan_extraction(cfg, table, mode, out)
        if audio is not None:
            plan.jobs = audio.attach(plan.jobs)  # each video's audio comes from its own decode pass
            audio.start()
        complete = complete_cache(cfg, table, mode, plan)
        if complete is not None:
            return {**complete, "seconds": round(time.perf_counter() - start, 2)}
        cfg = dataclasses.replace(cfg, runtime=runtime_for_cache(cfg.runtime, plan.backend))
        resolve_runtime(cfg.runtime, cfg.precision)  # a runtime this machine can't run fails before any worker
        if cfg.engine == "ray":
            from extract.ray_engine import require_ray

            require_ray()
            return _extract(cfg, None, _load(cfg), table, mode, start, plan, None, audio)
        sound = cfg.audio if audio is not None and audio.in_pass else ""
        with WorkerPool(cfg.workers or os.cpu_count() or 1, mode == "video", sound) as pool:
            spec = BACKBONES.get(cfg.backbone)
            early = face_settings(cfg, spec.input_size) if spec is not None and plan.jobs else None
            if early is not None:
                pool.submit(early, plan.jobs, cfg.transport)
            return _extract(cfg, pool, _load(cfg), table, mode, start, plan, early, audio)


def _load(cfg: ExtractConfig):
    from extract.litert import load_inference_backbone

    return load_inference_backbone(
        cfg.backbone, cfg.weights, cfg.embedding_layer, cfg.precision, runtime=cfg.runtime, models_dir=cfg.models_dir
    )


def _extract(cfg, pool: "WorkerPool | None", backbone, table, mode: str, start: float, plan: Plan, early, audio):
    backbone.batch_size = cfg.batch
    cfg = dataclasses.replace(cfg, runtime="litert" if backbone.backend == "litert" else "keras")  # as it ran
    settings = face_settings(cfg, backbone.input_size)
    if early is not None and early != settings:
        raise ValueError(
            f"backbone '{cfg.backbone}' takes {backbone.input_size}, not its registry's {early.input_size}"
        )
    meta = _meta(backbone, settings, mode)
    out = cache_path(cfg.cache_dir, cfg.dataset, cfg.backbone)
    crops = CropFiles(out, meta, cfg.crop_size) if cfg.save_crops else None
    parts = parts_dir_for(out)
    if crops:
        crops.merge()
    recovered = merge_shards(out, parts, meta)
    if recovered:
        log.info("folded %d videos finished by an earlier, interrupted run into %s", len(recovered), out)
    jobs = plan.jobs
    summary = summary_head(cfg, mode, out, table, plan, meta)
    if crops:
        summary["crops"] = str(crops.path)
    if jobs and pool is None:
        from extract.ray_engine import run_on_ray

        run_on_ray(cfg, jobs, settings, meta, parts, summary, audio)
    elif jobs:
        loop = JobLoop(pool, jobs, cfg, backbone, meta, parts, summary, crops, audio)
        loop.run(settings, submitted=early is not None)
    if crops:
        crops.merge()
    merge_shards(out, parts, meta)
    seconds = time.perf_counter() - start
    summary.update(
        seconds=round(seconds, 2),
        frames_per_s=round(summary["frames"] / seconds, 1) if seconds else 0.0,
        face_hit_rate=round(summary["faces"] / summary["frames"], 4) if summary["frames"] else 0.0,
    )
    if jobs or not summary_path(out).exists():  # a run with nothing to do keeps the last real summary
        summary_path(out).write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary
