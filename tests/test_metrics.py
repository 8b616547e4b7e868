"""core.scores and the task entries' scoring: CCC against its formula and known values, and scores
from a predictions table."""

import math

import numpy as np
import pandas as pd
import pytest

from core.scores import ccc, f1_macro, f1_present, json_safe, pearson
from core.tasks import TASKS
from data_manifests.schema import AU_NAMES, ERI_NAMES, EXPR_CLASSES


def _ccc_numpy(x, y):
    # Lin's formula written out with population moments, independently of core.scores.
    x, y = np.asarray(x, float), np.asarray(y, float)
    sxy = np.sum((x - x.mean()) * (y - y.mean())) / len(x)
    return 2 * sxy / (np.var(x) + np.var(y) + (x.mean() - y.mean()) ** 2)


def test_ccc_matches_formula_on_random_series():
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.normal(size=200)
        y = 0.6 * x + rng.normal(0.3, 0.8, size=200)
        assert ccc(x, y) == pytest.approx(_ccc_numpy(x, y), rel=1e-12)


def test_ccc_known_values():
    x = np.array([0.1, -0.4, 0.7, 0.2, -0.9])
    assert ccc(x, x) == pytest.approx(1.0)
    centred = x - x.mean()  # negation reaches -1 only when the means agree (both zero)
    assert ccc(centred, -centred) == pytest.approx(-1.0)
    assert -1.0 < ccc(x, -x) < -0.9
    shifted = x + 0.5
    assert pearson(x, shifted) == pytest.approx(1.0)
    assert ccc(x, shifted) < pearson(x, shifted) - 0.1
    # x = 1, 2, 3 and y = 2x: cov 4/3, var 2/3 and 8/3, mean gap 2 -> (8/3) / (22/3) = 8/22
    assert ccc([1, 2, 3], [2, 4, 6]) == pytest.approx(8 / 22)
    assert math.isnan(ccc([0.5, 0.5], [0.5, 0.5]))
    assert math.isnan(ccc([], []))
    with pytest.raises(ValueError, match="same length"):
        ccc([1, 2], [1, 2, 3])


def test_pearson_matches_numpy():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    assert math.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_f1_macro_by_hand():
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 1 fp 1 fn 1 -> 0.5; class 2: tp 1 -> 1.0
    assert f1_present([0, 0, 1, 1, 2], [0, 1, 1, 0, 2]) == pytest.approx(2 / 3)
    # ABAW: summed over all the task's classes and divided by their count; class 3 never occurs -> 0
    assert f1_macro([0, 0, 1, 1, 2], [0, 1, 1, 0, 2], 3) == pytest.approx(2 / 3)
    assert f1_macro([0, 0, 1, 1, 2], [0, 1, 1, 0, 2], 4) == pytest.approx(2 / 4)


def _base(n, face=None, valid=None):
    return {
        "sample_id": ["a"] * n,
        "frame_index": np.arange(1, n + 1),
        "face": np.ones(n, int) if face is None else face,
        "valid": np.ones(n, int) if valid is None else valid,
    }


def test_va_metrics_ignore_rows_without_face_or_label():
    rng = np.random.default_rng(2)
    v, a = rng.uniform(-1, 1, 40), rng.uniform(-1, 1, 40)
    pv, pa = v * 0.8 + 0.1, rng.uniform(-1, 1, 40)
    face = np.ones(40, int)
    valid = np.ones(40, int)
    face[:5] = 0
    valid[5:10] = 0
    df = pd.DataFrame(
        {**_base(40, face, valid), "true_valence": v, "true_arousal": a, "pred_valence": pv, "pred_arousal": pa}
    )
    m = TASKS["va"].metrics(df, model="gru")
    keep = slice(10, 40)
    assert m["ccc_valence"] == pytest.approx(_ccc_numpy(v[keep], pv[keep]))
    assert m["ccc_arousal"] == pytest.approx(_ccc_numpy(a[keep], pa[keep]))
    assert m["ccc_mean"] == pytest.approx((m["ccc_valence"] + m["ccc_arousal"]) / 2)
    assert m["pearson_valence"] == pytest.approx(1.0)
    assert (m["n_frames"], m["n_no_face"], m["task"], m["model"]) == (30, 5, "va", "gru")
    # Wrecking the excluded rows changes nothing.
    df.loc[:9, "pred_valence"] = -5.0
    assert TASKS["va"].metrics(df)["ccc_valence"] == pytest.approx(m["ccc_valence"])


def test_expr_metrics_keys_and_values():
    true = np.array([0, 0, 1, 1, 2, 4])
    pred = np.array([0, 1, 1, 0, 2, 7])
    probs = np.eye(8)[pred]
    df = pd.DataFrame(
        {**_base(6), "true": true, "pred": pred, **{f"prob_{c}": probs[:, k] for k, c in enumerate(EXPR_CLASSES)}}
    )
    assert list(df.columns[4:]) == TASKS["expr"].column_names()
    m = TASKS["expr"].metrics(df)
    assert m["accuracy"] == pytest.approx(3 / 6)
    # classes present in true or pred: 0, 1, 2, 4, 7 -> F1 0.5, 0.5, 1, 0, 0; 3, 5, 6 never occur
    assert m["f1_present"] == pytest.approx(2 / 5)
    # ABAW EXPR: sum of the 8 F1s / 8, the classes that never occur count 0
    assert m["f1_macro"] == pytest.approx((0.5 + 0.5 + 1.0) / 8)
    assert TASKS["expr"].monitor == "f1_macro" and TASKS["expr"].headline[0] == "f1_macro"
    assert m["f1_Neutral"] == pytest.approx(0.5) and m["f1_Disgust"] == pytest.approx(1.0)
    assert m["f1_Surprise"] == 0.0
    assert {f"f1_{c}" for c in EXPR_CLASSES} <= set(m)


def test_va_metric_by_hand():
    # valence 1, 2, 3 -> 2, 4, 6: CCC 8/22 (test_ccc_known_values); arousal predicted exactly: 1
    df = pd.DataFrame(
        {
            **_base(3),
            "true_valence": [1.0, 2.0, 3.0],
            "true_arousal": [0.5, 0.0, -0.5],
            "pred_valence": [2.0, 4.0, 6.0],
            "pred_arousal": [0.5, 0.0, -0.5],
        }
    )
    m = TASKS["va"].metrics(df)
    assert m["ccc_valence"] == pytest.approx(8 / 22) and m["ccc_arousal"] == pytest.approx(1.0)
    assert m["ccc_mean"] == pytest.approx((8 / 22 + 1.0) / 2)


def test_au_threshold_is_inclusive():
    prob = np.full((3, 12), 0.2)
    prob[:, 0] = [0.5, 0.4999, 0.9]
    cols = TASKS["au"].prediction_columns(np.zeros((3, 12)), prob)
    assert cols["pred_AU1"].tolist() == [1, 0, 1] and cols["pred_AU2"].tolist() == [0, 0, 0]


def test_au_metrics():
    n = 8
    true = np.zeros((n, 12), int)
    pred = np.zeros((n, 12), int)
    true[:4, 0] = 1
    pred[:2, 0] = 1  # AU1: tp 2, fn 2 -> F1 2/3
    true[:, 1] = pred[:, 1] = 1  # AU2 perfect
    cols = {
        **{f"true_{a}": true[:, k] for k, a in enumerate(AU_NAMES)},
        **{f"prob_{a}": pred[:, k] * 0.9 for k, a in enumerate(AU_NAMES)},
        **{f"pred_{a}": pred[:, k] for k, a in enumerate(AU_NAMES)},
    }
    m = TASKS["au"].metrics(pd.DataFrame({**_base(n), **cols}))
    assert m["f1_AU1"] == pytest.approx(2 / 3) and m["f1_AU2"] == pytest.approx(1.0)
    assert m["f1_AU4"] == 0.0
    assert m["au_f1_mean"] == pytest.approx((2 / 3 + 1) / 12)


def test_eri_metrics_and_json_safe():
    rng = np.random.default_rng(3)
    true = rng.random((10, 7))
    pred = true.copy()
    pred[:, 1] = 0.5  # constant prediction: Pearson undefined
    cols = {
        **{f"true_{e}": true[:, k] for k, e in enumerate(ERI_NAMES)},
        **{f"pred_{e}": pred[:, k] for k, e in enumerate(ERI_NAMES)},
    }
    df = pd.DataFrame({**_base(10), **cols})
    df["frame_index"] = 0
    m = TASKS["eri"].metrics(df)
    assert m["pearson_Adoration"] == pytest.approx(1.0)
    assert math.isnan(m["pearson_Amusement"]) and math.isnan(m["pearson_mean"])
    assert json_safe(m)["pearson_Amusement"] is None


def test_eri_metric_by_hand():
    # Column 0: true 1, 2, 3 against 1, 2, 4: sum dx dy = 3, sum dx^2 = 2, sum dy^2 = 42/9 -> 9 / sqrt(84);
    # the other six are predicted exactly (Pearson 1).
    true = np.tile(np.array([[0.1], [0.2], [0.3]]), (1, 7)) + np.arange(7) * 0.01
    pred = true.copy()
    pred[:, 0] = [0.1, 0.2, 0.4]
    cols = {
        **{f"true_{e}": true[:, k] for k, e in enumerate(ERI_NAMES)},
        **{f"pred_{e}": pred[:, k] for k, e in enumerate(ERI_NAMES)},
    }
    df = pd.DataFrame({**_base(3), **cols})
    m = TASKS["eri"].metrics(df)
    assert m[f"pearson_{ERI_NAMES[0]}"] == pytest.approx(9 / math.sqrt(84))
    assert m["pearson_mean"] == pytest.approx((6 + 9 / math.sqrt(84)) / 7)


def test_every_task_states_its_formula():
    for name, task in TASKS.items():
        assert task.monitor in task.formula, name


def test_missing_column_is_named():
    df = pd.DataFrame({**_base(3), "true_valence": [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match=r"lacks columns \['true_arousal'"):
        TASKS["va"].metrics(df)
