"""What an extraction run has left to do, decided before the backbone loads: :func:`plan_extraction` (the
cache's videos, those finished in shards, the changed sources) and :func:`complete_cache` (nothing
to do: the run returns without loading the backend or starting workers), and the workers' settings
(:func:`face_settings`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from extract.cache import CacheReader, cache_path, parts_dir_for
from extract.worker import FaceSettings, Job, Subject

if TYPE_CHECKING:
    from extract.pipeline import ExtractConfig

log = logging.getLogger(__name__)


def plan_jobs(samples, mode: str, done: set[str]) -> tuple[list[Job], list[str]]:
    """Jobs for every sample not yet in the cache, and the samples that lack this mode's input.

    In video mode the subjects of one video (``_left``/``_right``) share a job, so a video is
    decoded once.
    """
    jobs, missing = [], []
    by_video: dict[str, list] = collections.defaultdict(list)
    for row in samples.itertuples(index=False):
        if row.sample_id in done:
            continue
        if mode == "frames":
            if not row.frames_dir:
                missing.append(f"{row.sample_id}: no cropped frames folder")
                continue
            jobs.append(Job(len(jobs), "frames", row.frames_dir, (Subject(row.sample_id),), int(row.n_frames)))
        else:
            if not row.media_path:
                missing.append(f"{row.sample_id}: no video file found for '{row.video}'")
                continue
            by_video[row.media_path].append(Subject(row.sample_id, row.side or ""))
    for path, subjects in by_video.items():
        jobs.append(Job(len(jobs), "video", path, tuple(subjects)))
    return jobs, missing


@dataclass
class Plan:
    """What is left to extract: decided before the backbone loads, from the cache and the shards."""

    done: set
    changed: list
    missing: list
    jobs: list
    backend: str = ""  # what computed the embeddings already cached (``CacheMeta.backend``); "": none yet


def plan_extraction(cfg: ExtractConfig, table, mode: str, out: Path) -> Plan:
    from extract.cache import shard_video_ids
    from extract.crops import crops_path

    reader = CacheReader(out) if out.is_file() else None
    done = (set(reader.video_ids()) if reader else set()) | shard_video_ids(parts_dir_for(out))
    backend = reader.meta.backend if reader else _shard_backend(parts_dir_for(out))
    changed = changed_sources(reader, table, mode, done) if reader else []
    if changed and cfg.refresh:
        log.info("extracting again %d videos whose source changed: %s", len(changed), ", ".join(changed[:5]))
        done -= set(changed)
    if cfg.save_crops:  # a video cached without its crops is extracted again
        path = crops_path(out)
        done &= (set(CacheReader(path).video_ids()) if path.is_file() else set()) | shard_video_ids(parts_dir_for(path))
    jobs, missing = plan_jobs(table, mode, done)
    _warn(changed if not cfg.refresh else [], missing, mode)
    return Plan(done, changed, missing, jobs[: cfg.limit] if cfg.limit else jobs, backend)


def _shard_backend(parts: Path) -> str:
    """The backend a finished shard of an interrupted first run records ("" if none is readable)."""
    from extract.cache import CacheMeta, finished_shards, open_h5

    for shard in finished_shards(parts):
        try:
            with open_h5(shard, "r") as f:
                return CacheMeta.from_attrs(f.attrs).backend
        except (OSError, KeyError, ValueError):
            continue  # unreadable: merge_shards reports it with its path
    return ""


def _warn(changed: list[str], missing: list[str], mode: str) -> None:
    if changed:
        log.warning(
            "%d cached videos changed on disk since they were extracted (e.g. '%s'): their embeddings are "
            "kept; run again with --refresh (EXTRACT_ARGS=--refresh) to extract them again",
            len(changed),
            changed[0],
        )
    if missing:
        log.warning(
            "skipped %d samples without input for mode '%s' (listed in the run summary), e.g. %s",
            len(missing),
            mode,
            missing[0],
        )


def face_settings(cfg: ExtractConfig, input_size: tuple) -> FaceSettings:
    """The workers' settings for a backbone taking ``input_size`` crops."""
    return FaceSettings(
        input_size=tuple(input_size),
        detector=cfg.detector,
        min_score=cfg.min_score,
        margin=cfg.margin,
        align=cfg.align,
        chunk=cfg.chunk,
        detect_every=cfg.detect_every,
        save_crops=cfg.crop_size if cfg.save_crops else 0,
    )


def complete_cache(cfg: ExtractConfig, table, mode: str, plan: Plan) -> dict | None:
    """The summary of a run with nothing to do, decided without the backbone, the backend or the
    workers (seconds of start-up saved): ``plan`` has no job, no shard waits to be merged, and the
    cache was written with this backbone, weights and face settings. None: take the full path, which
    also gives the precise error when a setting differs."""
    from extract.backbones import BACKBONES

    out = cache_path(cfg.cache_dir, cfg.dataset, cfg.backbone)
    spec = BACKBONES.get(cfg.backbone)
    parts = parts_dir_for(out)
    if plan.jobs or spec is None or cfg.save_crops or not out.is_file() or (parts.is_dir() and any(parts.iterdir())):
        return None
    if cfg.weights and not Path(cfg.weights).is_file():
        return None  # the full path names the missing file
    meta = CacheReader(out).meta
    want = (cfg.backbone, face_settings(cfg, spec.input_size).describe(mode), spec.weights_sha(cfg.weights))
    if (meta.backbone, meta.detector, meta.weights_sha256) != want:
        return None
    if cfg.embedding_layer and cfg.embedding_layer != meta.embedding_layer:
        return None
    log.info("%s holds every sample already: nothing to extract", out)
    return {**summary_head(cfg, mode, out, table, plan, meta), "frames_per_s": 0.0, "face_hit_rate": 0.0}


def summary_head(cfg: ExtractConfig, mode: str, out: Path, table, plan: Plan, meta) -> dict:
    """The run summary's fields known before any frame is extracted (counts start at 0)."""
    return {
        "config": dataclasses.asdict(cfg),
        "mode": mode,
        "cache": str(out),
        "samples": int(len(table)),
        "skipped_done": len(plan.done & set(table.sample_id)),
        "missing_input": plan.missing,
        "changed_sources": plan.changed,
        "refreshed": bool(cfg.refresh and plan.changed),
        "done": 0,
        "failed": [],
        "frames": 0,
        "faces": 0,
        "detected_frames": 0,
        "backend": meta.backend,
        "backbone": meta.backbone,
        "embedding_dim": meta.embedding_dim,
    }


def changed_sources(reader: CacheReader, table, mode: str, done: set[str]) -> list[str]:
    """The cached samples whose source (frames folder or video) no longer has its stored fingerprint."""
    from extract.fingerprint import changed, fingerprint

    stored = reader.fingerprints()
    out = []
    for row in table.itertuples(index=False):
        source = row.frames_dir if mode == "frames" else row.media_path
        if row.sample_id in done and source and changed(stored.get(row.sample_id, ""), fingerprint(source)):
            out.append(row.sample_id)
    return sorted(out)
