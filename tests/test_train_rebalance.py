"""train.rebalance: seeded, pure, and what each scheme does to the counts."""

import numpy as np
import pytest

from core.registry import ConfigError
from core.task_kinds import va_histogram
from core.tasks import TASKS
from train.config import TrainConfig
from train.rebalance import apply_rebalance, undersample, va_hist_keep


def _classes(seed=0):
    rng = np.random.default_rng(seed)
    return rng.choice(8, size=3000, p=[0.4, 0.2, 0.1, 0.1, 0.08, 0.06, 0.04, 0.02])


def test_undersample_to_rarest_class():
    y = _classes()
    keep = undersample(y, seed=0)
    counts = np.bincount(y[keep], minlength=8)
    assert (counts == np.bincount(y).min()).all()


def test_undersample_cap_and_ineligible_units():
    y = _classes()
    groups = y.copy()
    groups[:100] = -1
    keep = undersample(groups, seed=0, cap=2.0)
    rarest = np.bincount(groups[groups >= 0]).min()
    counts = np.bincount(groups[keep & (groups >= 0)], minlength=8)
    np.testing.assert_array_equal(counts, np.minimum(np.bincount(groups[groups >= 0]), 2 * rarest))
    assert keep[:100].all()


def test_undersample_is_seeded():
    y = _classes()
    a, b, c = undersample(y, 5), undersample(y, 5), undersample(y, 6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.sum() == c.sum()


def test_va_hist_thins_the_dense_cell():
    rng = np.random.default_rng(0)
    dense = rng.uniform(0.01, 0.04, size=(2000, 2))  # one cell of a 40 x 40 grid over [-1, 1]^2
    spread = rng.uniform(-1, 1, size=(2000, 2))
    va = np.concatenate([dense, spread, [[0.0, 0.0]]])
    keep = va_hist_keep(va[:, 0], va[:, 1], seed=0, bins=40)
    in_dense = np.arange(len(va)) < 2000
    counts, _ = va_histogram(va[:, 0], va[:, 1], 40)
    assert counts.max() > 2000
    assert keep[in_dense].mean() == 0.0  # the densest cell is above (mean + max) / 2: emptied
    assert keep[2000:4000].mean() > 0.95  # sparse cells are kept with probability ~1
    assert not keep[-1]  # exact (0, 0) is dropped, as in the authors' code
    np.testing.assert_array_equal(keep, va_hist_keep(va[:, 0], va[:, 1], seed=0, bins=40))


def test_va_hist_keep_probability_falls_with_density():
    rng = np.random.default_rng(1)
    big = np.tile([[0.51, 0.51]], (300, 1))
    mid = np.tile([[-0.51, 0.51]], (150, 1))
    small = rng.uniform(-1, -0.6, size=(300, 2))
    va = np.concatenate([big, mid, small])
    keeps = np.mean([va_hist_keep(va[:, 0], va[:, 1], seed=s, bins=4) for s in range(20)], axis=0)
    # 4 x 4 cells: counts 300, 150, 300 (one cell), rest 0 -> ref = (750/16 + 300) / 2 = 173.4
    assert keeps[:300].mean() == 0.0
    assert keeps[300:450].mean() == pytest.approx(1 - 150 / 173.4375, abs=0.03)
    seeds = [va_hist_keep(va[:, 0], va[:, 1], seed=s, bins=4) for s in (0, 1)]
    assert not np.array_equal(*seeds)


def test_au_groups_pick_the_rarest_active_au():
    labels = np.zeros((6, 12))
    labels[0, [0, 1]] = 1
    labels[1, [0]] = 1
    labels[2, [0, 1]] = 1
    labels[3, [0, 5]] = 1
    labels[4, [1]] = 1
    eligible = np.array([True, True, True, True, True, False])
    groups = TASKS["au"].rebalance_groups(labels, eligible)
    # positives: AU idx0 4, idx1 3, idx5 1 -> a frame's group is its rarest active AU; none -> 12
    assert groups.tolist() == [1, 0, 1, 5, 1, -1]


def test_va_groups_are_quadrants():
    labels = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    assert TASKS["va"].rebalance_groups(labels, np.ones(4, bool)).tolist() == [0, 1, 2, 3]


def test_apply_rebalance_reports_before_and_after():
    y = _classes()[:, None].astype(np.float32)
    eligible = np.ones(len(y), bool)
    eligible[::10] = False
    cfg = TrainConfig(task="expr", rebalance="undersample", seed=3)
    keep, dist = apply_rebalance(cfg, TASKS["expr"], y, eligible)
    assert not keep[~eligible].any()
    before, after = dist["before"]["classes"], dist["after"]["classes"]
    assert before["Neutral"] == int(np.sum(y[eligible, 0] == 0))
    assert len(set(after.values())) == 1 and after["Other"] == min(before.values())
    assert (dist["rebalance"], dist["unit"]) == ("undersample", "frames")
    none_keep, none_dist = apply_rebalance(TrainConfig(task="expr"), TASKS["expr"], y, eligible)
    np.testing.assert_array_equal(none_keep, eligible)
    assert none_dist["before"] == none_dist["after"]


def test_va_hist_needs_va():
    with pytest.raises(ConfigError, match="--rebalance va-hist works on valence/arousal labels"):
        apply_rebalance(
            TrainConfig(task="expr", rebalance="va-hist"), TASKS["expr"], np.zeros((3, 1), np.float32), np.ones(3, bool)
        )


def test_va_distribution_has_histogram():
    rng = np.random.default_rng(0)
    y = rng.uniform(-1, 1, size=(500, 2)).astype(np.float32)
    keep, dist = apply_rebalance(
        TrainConfig(task="va", rebalance="va-hist", va_bins=10), TASKS["va"], y, np.ones(500, bool)
    )
    hist = dist["before"]["histogram"]
    assert len(hist["edges"]) == 11 and np.sum(hist["counts"]) == 500
    assert np.sum(dist["after"]["histogram"]["counts"]) == keep.sum() == dist["after"]["units"]
    assert sum(dist["before"]["quadrants"].values()) == 500
