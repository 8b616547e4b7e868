"""Downsampling-based rebalancing of the training split: pure functions of (labels, seed).

Rebalancing only ever *removes* training units, and never touches validation. For frame tasks a
unit is a frame and removal happens through the loss mask: a dropped frame keeps its place in
every window (the model still sees it as context) but adds nothing to the loss. For clip tasks a
unit is a clip: a dropped clip contributes no window.

``REBALANCE``:

- ``none``: every annotated training frame with a face counts.
- ``undersample``: each group keeps at most ``cap x`` the rarest group's count (``cap = 1``:
  exactly balanced), chosen at random. The task entry says what a group is
  (``core.tasks.TaskSpec.grouping``): the class (expr, clip); for au, the frame's rarest active
  AU (rarest by training positives) or ``none`` when no AU is active, since a frame carries
  several AUs at once; for va, the (valence >= 0, arousal >= 0) quadrant; for eri, the dominant
  (largest) intensity.
- ``va-hist`` (Rangulov & Fahim 2020, tasks whose labels are valence and arousal): a 2-D (valence,
  arousal) histogram over ``[-1, 1]^2`` with ``va_bins`` bins per axis; a frame in a cell holding
  ``k`` frames is kept with probability ``max(0, 1 - k / ref)``, ``ref = (mean + max) / 2`` of the
  cell counts (empty cells included), so dense cells (near neutral) are thinned and the densest is
  emptied; frames at exactly (0, 0) are dropped, as in the authors' code.

Example:

>>> keep = undersample(np.array([0, 0, 0, 1, -1]), seed=0)
>>> keep.tolist()        # one of the three class-0 frames survives; -1 (not eligible) is untouched
[False, False, True, True, True]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from core.registry import ConfigError, Registry
from core.task_kinds import va_histogram
from core.tasks import TaskSpec
from train.config import TrainConfig


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


@dataclass(frozen=True)
class RebalanceSpec:
    """``keep(task, labels [N, C], eligible [N], cfg) -> bool [N]``, a subset of ``eligible``."""

    keep: Callable[[TaskSpec, np.ndarray, np.ndarray, TrainConfig], np.ndarray]
    description: str


def _none(task, labels, eligible, cfg):
    return np.asarray(eligible, bool).copy()


def _undersample(task, labels, eligible, cfg):
    eligible = np.asarray(eligible, bool)
    return eligible & undersample(task.rebalance_groups(labels, eligible), cfg.seed, cfg.undersample_cap)


def _va_hist(task, labels, eligible, cfg):
    if not task.circumplex:
        raise ConfigError(
            f"--rebalance va-hist works on valence/arousal labels (--task va), not --task {task.name}; "
            f"use undersample or none"
        )
    eligible = np.asarray(eligible, bool)
    keep = np.zeros_like(eligible)
    idx = np.flatnonzero(eligible)
    keep[idx] = va_hist_keep(labels[idx, 0], labels[idx, 1], cfg.seed, cfg.va_bins)
    return keep


REBALANCE: Registry[RebalanceSpec] = Registry("rebalance", "--rebalance / REBALANCE")
REBALANCE.register("none", RebalanceSpec(_none, "train on every annotated frame with a face"))
REBALANCE.register(
    "undersample", RebalanceSpec(_undersample, "per-class downsampling to the rarest class count (x --undersample-cap)")
)
REBALANCE.register(
    "va-hist", RebalanceSpec(_va_hist, "Rangulov & Fahim 2020: thin dense (valence, arousal) histogram cells (task va)")
)


def apply_rebalance(
    cfg: TrainConfig, task: TaskSpec, labels: np.ndarray, eligible: np.ndarray
) -> tuple[np.ndarray, dict]:
    """Runs ``cfg.rebalance``; returns the kept mask and ``{"before", "after", ...}`` distributions."""
    keep = REBALANCE[cfg.rebalance].keep(task, labels, eligible, cfg)
    dist = {
        "rebalance": cfg.rebalance,
        "unit": task.unit,
        "before": task.label_distribution(labels, eligible, cfg.va_bins),
        "after": task.label_distribution(labels, keep, cfg.va_bins),
    }
    return keep, dist
