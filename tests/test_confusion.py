"""evaluate.confusion: CSV counts equal sklearn's on the scored rows, normalised rows sum to 1, PNGs."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix

from data_manifests.schema import AFEW_CLASSES, AU_NAMES, EXPR_CLASSES
from evaluate.confusion import confusion_tables, write_confusion

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 200 and im.size[1] > 200


def _class_table(names, n=400, seed=0):
    rng = np.random.default_rng(seed)
    k = len(names)
    true = rng.choice(k - 1, n)  # the last class is never true: its normalised row must be zeros
    pred = np.where(rng.random(n) < 0.5, true, rng.integers(0, k, n))
    df = pd.DataFrame(
        {
            "sample_id": "v",
            "frame_index": np.arange(1, n + 1),
            "face": (rng.random(n) > 0.1).astype(int),
            "valid": (rng.random(n) > 0.1).astype(int),
            "true": true,
            "pred": pred,
        }
    )
    for c in names:
        df[f"prob_{c}"] = 1.0 / k
    return df


@pytest.mark.parametrize("task,names", [("expr", EXPR_CLASSES), ("clip", AFEW_CLASSES)])
def test_class_confusion_files(tmp_path, task, names):
    df = _class_table(names)
    written = write_confusion(df, task, tmp_path / "out")
    assert sorted(p.name for p in written) == [
        "confusion_counts.csv",
        "confusion_counts.png",
        "confusion_normalised.csv",
        "confusion_normalised.png",
    ]
    scored = df[(df.valid == 1) & (df.face == 1)]
    expected = confusion_matrix(scored["true"], scored["pred"], labels=list(range(len(names))))

    counts = pd.read_csv(tmp_path / "out/confusion_counts.csv", index_col=0)
    assert counts.index.name == "true"
    assert list(counts.index) == list(names) and list(counts.columns) == list(names)
    np.testing.assert_array_equal(counts.to_numpy(), expected)
    assert counts.to_numpy().sum() == len(scored) < len(df)  # no-face and unannotated rows left out

    norm = pd.read_csv(tmp_path / "out/confusion_normalised.csv", index_col=0)
    assert list(norm.columns) == list(names)
    sums = norm.to_numpy().sum(axis=1)
    np.testing.assert_allclose(sums[:-1], 1.0, atol=1e-5)
    assert sums[-1] == 0.0  # a class never true has no distribution to show
    np.testing.assert_allclose(
        norm.to_numpy()[:-1], expected[:-1] / expected[:-1].sum(axis=1, keepdims=True), atol=1e-6
    )
    for p in written:
        if p.suffix == ".png":
            _assert_png(p)


def test_confusion_tables_use_every_class_id():
    counts, norm = confusion_tables([0, 0, 2], [0, 2, 2], ("a", "b", "c"))
    assert counts.to_numpy().tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 1]]
    assert norm.to_numpy().tolist() == [[0.5, 0.0, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


def test_au_confusion(tmp_path):
    rng = np.random.default_rng(1)
    n = 300
    df = pd.DataFrame(
        {"sample_id": "v", "frame_index": np.arange(1, n + 1), "face": (rng.random(n) > 0.1).astype(int), "valid": 1}
    )
    true = (rng.random((n, len(AU_NAMES))) < 0.3).astype(int)
    pred = (rng.random((n, len(AU_NAMES))) < 0.4).astype(int)
    for k, au in enumerate(AU_NAMES):
        df[f"true_{au}"] = true[:, k]
    for k, au in enumerate(AU_NAMES):
        df[f"prob_{au}"] = pred[:, k] * 0.9
    for k, au in enumerate(AU_NAMES):
        df[f"pred_{au}"] = pred[:, k]
    written = write_confusion(df, "au", tmp_path)
    assert [p.name for p in written] == ["confusion_au.csv", "confusion_au.png"]
    table = pd.read_csv(tmp_path / "confusion_au.csv", index_col="AU")
    keep = df.face.to_numpy() == 1
    mcm = multilabel_confusion_matrix(true[keep], pred[keep])
    assert list(table.index) == list(AU_NAMES)
    np.testing.assert_array_equal(table[["TN", "FP", "FN", "TP"]].to_numpy(), mcm.reshape(-1, 4))
    np.testing.assert_array_equal(table["positives"].to_numpy(), true[keep].sum(axis=0))
    _assert_png(tmp_path / "confusion_au.png")


def test_confusion_refuses_regression_tasks_and_missing_columns(tmp_path):
    with pytest.raises(ValueError, match="no confusion matrix for task 'va'; tasks with one: expr, au, clip"):
        write_confusion(pd.DataFrame(), "va", tmp_path)
    df = _class_table(EXPR_CLASSES).drop(columns=["pred"])
    with pytest.raises(ValueError, match=r"lacks columns \['pred'\]; see docs/run_format.md"):
        write_confusion(df, "expr", tmp_path)
