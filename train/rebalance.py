"""Downsampling-based rebalancing of the training split: pure functions of (labels, seed).

Rebalancing only ever *removes* training units, and never touches validation. For frame tasks a
unit is a frame and removal happens through the loss mask: a dropped frame keeps its place in
every window (the model still sees it as context) but adds nothing to the loss. For clip tasks a
unit is a clip: a dropped clip contributes no window.

``REBALANCE``:

- ``none``: every annotated training frame with a face counts.
- ``undersample``: each group keeps at most ``cap x`` the rarest group's count (``cap = 1``:
  exactly balanced), chosen at random. Groups: the class (expr, clip); for au, the frame's rarest
  active AU (rarest by training positives) or ``none`` when no AU is active, since a frame carries
  several AUs at once; for va, the (valence >= 0, arousal >= 0) quadrant; for eri, the dominant
  (largest) intensity.
- ``va-hist`` (Rangulov & Fahim 2020, va only): a 2-D (valence, arousal) histogram over
  ``[-1, 1]^2`` with ``va_bins`` bins per axis; a frame in a cell holding ``k`` frames is kept with
  probability ``max(0, 1 - k / ref)``, ``ref = (mean + max) / 2`` of the cell counts (empty cells
  included), so dense cells (near neutral) are thinned and the densest is emptied; frames at
  exactly (0, 0) are dropped, as in the authors' code.

Example:

>>> keep = undersample(np.array([0, 0, 0, 1, -1]), seed=0)
>>> keep.tolist()        # one of the three class-0 frames survives; -1 (not eligible) is untouched
[False, False, True, True, True]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from train.config import ConfigError, Registry, TrainConfig
from train.tasks import TaskSpec


def undersample(groups: np.ndarray, seed: int, cap: float = 1.0) -> np.ndarray:
    """Keeps at most ``floor(cap x n_rarest)`` units per group, chosen with ``seed``.

    Args:
        groups: int ``[N]``, a group id per unit; ``-1`` marks units outside the draw (kept).
        seed: the draw's seed. cap: ratio to the rarest group's count (>= 1).

    Returns:
        bool ``[N]``, True for kept units.
    """
    groups = np.asarray(groups)
    keep = np.ones(groups.shape[0], bool)
    ids, counts = np.unique(groups[groups >= 0], return_counts=True)
    if not ids.size:
        return keep
    target = int(np.floor(cap * counts.min()))
    rng = np.random.default_rng(seed)
    for gid, count in zip(ids, counts):
        if count > target:
            members = np.flatnonzero(groups == gid)
            keep[members] = False
            keep[rng.choice(members, size=target, replace=False)] = True
    return keep


def va_histogram(valence: np.ndarray, arousal: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts ``[bins, bins]`` (valence rows, arousal columns) over ``[-1, 1]^2`` and the edges."""
    edges = np.linspace(-1.0, 1.0, bins + 1)
    counts, _, _ = np.histogram2d(valence, arousal, bins=[edges, edges])
    return counts, edges


def va_hist_keep(valence: np.ndarray, arousal: np.ndarray, seed: int, bins: int = 40) -> np.ndarray:
    """Rangulov & Fahim (2020): keep with probability ``max(0, 1 - k / ref)`` (see module doc)."""
    valence = np.asarray(valence, np.float64)
    arousal = np.asarray(arousal, np.float64)
    if not valence.size:
        return np.ones(0, bool)
    counts, edges = va_histogram(valence, arousal, bins)
    ref = (counts.mean() + counts.max()) / 2
    iv = np.clip(np.searchsorted(edges, valence, side="right") - 1, 0, bins - 1)
    ia = np.clip(np.searchsorted(edges, arousal, side="right") - 1, 0, bins - 1)
    p_keep = np.clip(1.0 - counts[iv, ia] / ref, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    return (rng.random(valence.size) < p_keep) & ~((valence == 0) & (arousal == 0))


def groups_for(task: TaskSpec, labels: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """The ``undersample`` group of each unit (module doc); ``-1`` where not eligible."""
    labels = np.asarray(labels, np.float64)
    if task.labels.kind == "class":
        groups = labels[:, 0].astype(np.int64)
    elif task.labels.kind == "multilabel":
        active = labels > 0.5
        positives = active[eligible].sum(axis=0)
        # Rarest AU first; AUs never positive sort last and never win (no frame has them active).
        rank = np.argsort(positives, kind="stable")
        by_rank = active[:, rank]
        groups = np.where(by_rank.any(axis=1), rank[by_rank.argmax(axis=1)], labels.shape[1])
    elif task.name == "va":
        groups = (labels[:, 0] >= 0).astype(np.int64) * 2 + (labels[:, 1] >= 0)
    else:
        groups = labels.argmax(axis=1)
    return np.where(eligible, groups, -1)


def label_distribution(task: TaskSpec, labels: np.ndarray, mask: np.ndarray, bins: int) -> dict:
    """Counts of the units in ``mask``: per class, per AU, per quadrant and 2-D histogram (va)."""
    labels = np.asarray(labels, np.float64)[np.asarray(mask, bool)]
    names = task.labels.names
    out: dict = {"units": int(labels.shape[0])}
    if task.labels.kind == "class":
        ids = labels[:, 0].astype(np.int64)
        out["classes"] = {n: int(np.sum(ids == k)) for k, n in enumerate(names)}
    elif task.labels.kind == "multilabel":
        out["positives"] = {n: int(np.sum(labels[:, k] > 0.5)) for k, n in enumerate(names)}
        out["no_active"] = int(np.sum(~(labels > 0.5).any(axis=1)))
    elif task.name == "va":
        counts, edges = va_histogram(labels[:, 0], labels[:, 1], bins)
        quadrant = (labels[:, 0] >= 0).astype(int) * 2 + (labels[:, 1] >= 0)
        out["quadrants"] = {q: int(np.sum(quadrant == k)) for k, q in
                            enumerate(("v-a-", "v-a+", "v+a-", "v+a+"))}
        out["histogram"] = {"edges": edges.round(6).tolist(), "counts": counts.astype(int).tolist()}
    else:
        dominant = labels.argmax(axis=1) if labels.size else np.zeros(0, int)
        out["dominant"] = {n: int(np.sum(dominant == k)) for k, n in enumerate(names)}
        out["mean"] = {n: float(labels[:, k].mean()) if labels.size else None for k, n in enumerate(names)}
    return out


@dataclass(frozen=True)
class RebalanceSpec:
    """``keep(task, labels [N, C], eligible [N], cfg) -> bool [N]``, a subset of ``eligible``."""

    keep: Callable[[TaskSpec, np.ndarray, np.ndarray, TrainConfig], np.ndarray]
    description: str


def _none(task, labels, eligible, cfg):
    return np.asarray(eligible, bool).copy()


def _undersample(task, labels, eligible, cfg):
    eligible = np.asarray(eligible, bool)
    return eligible & undersample(groups_for(task, labels, eligible), cfg.seed, cfg.undersample_cap)


def _va_hist(task, labels, eligible, cfg):
    if task.name != "va":
        raise ConfigError(f"--rebalance va-hist works on valence/arousal labels (--task va), not --task {task.name}; "
                          f"use undersample or none")
    eligible = np.asarray(eligible, bool)
    keep = np.zeros_like(eligible)
    idx = np.flatnonzero(eligible)
    keep[idx] = va_hist_keep(labels[idx, 0], labels[idx, 1], cfg.seed, cfg.va_bins)
    return keep


REBALANCE: Registry[RebalanceSpec] = Registry("rebalance", "--rebalance / REBALANCE")
REBALANCE.register("none", RebalanceSpec(_none, "train on every annotated frame with a face"))
REBALANCE.register("undersample", RebalanceSpec(
    _undersample, "per-class downsampling to the rarest class count (x --undersample-cap)"))
REBALANCE.register("va-hist", RebalanceSpec(
    _va_hist, "Rangulov & Fahim 2020: thin dense (valence, arousal) histogram cells (task va)"))


def apply_rebalance(cfg: TrainConfig, task: TaskSpec, labels: np.ndarray, eligible: np.ndarray) -> tuple[np.ndarray, dict]:
    """Runs ``cfg.rebalance``; returns the kept mask and ``{"before", "after", ...}`` distributions."""
    keep = REBALANCE[cfg.rebalance].keep(task, labels, eligible, cfg)
    dist = {"rebalance": cfg.rebalance, "unit": "frames" if task.level == "frame" else "clips",
            "before": label_distribution(task, labels, eligible, cfg.va_bins),
            "after": label_distribution(task, labels, keep, cfg.va_bins)}
    return keep, dist
