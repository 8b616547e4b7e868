"""train.models and core.losses: every model builds, trains, round-trips; the masked losses."""

import keras
import numpy as np
import pytest

from core.losses import MaskedBCELoss, MaskedCCCLoss, MaskedSparseCELoss
from core.registry import ConfigError
from core.scores import ccc
from core.tasks import TASKS
from extract.cache import CacheReader
from tests.train_helpers import random_dataset
from train.config import TrainConfig
from train.data import load_split
from train.models import MODELS, build_model
from train.windows import WindowDataset, train_windows

DIM = 8


def _stats():
    rng = np.random.default_rng(0)
    return rng.normal(size=DIM).astype(np.float32), rng.uniform(0.5, 2, DIM).astype(np.float32)


def _call(model, x):
    # A direct call runs eagerly: no per-shape tracing as model.predict would do.
    return keras.ops.convert_to_numpy(model(x, training=False))


def _inputs(b=3, t=12, seed=1):
    rng = np.random.default_rng(seed)
    face = (rng.random((b, t)) > 0.2).astype(np.float32)
    return {"embeddings": rng.normal(size=(b, t, DIM)).astype(np.float32), "face": face}


@pytest.fixture(scope="module")
def expr_split(tmp_path_factory):
    path, tab = random_dataset(tmp_path_factory.mktemp("cache"), "expr", n_videos=2, n_val=0, dim=DIM)
    return load_split(CacheReader(path), tab, TASKS["expr"])[0]


@pytest.mark.parametrize("name", list(MODELS))
def test_model_trains_saves_and_reloads(name, expr_split, tmp_path):
    keras.utils.set_random_seed(0)
    # One layer keeps tracing cheap; stacking is checked in test_layers_stack.
    cfg = TrainConfig(model=name, task="expr", layers=1, units=6, dropout=0.1)
    model = build_model(cfg, TASKS["expr"], *_stats())
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=TASKS["expr"].make_loss(cfg), jit_compile=False)
    sample, start = train_windows(expr_split, 16, 8)
    ds = WindowDataset(expr_split, sample, start, 16, 8, shuffle_seed=0)
    weights = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(ds, epochs=2, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert all(not np.array_equal(a, keras.ops.convert_to_numpy(b)) for a, b in zip(weights, model.trainable_weights))
    x = _inputs()
    out = _call(model, x)
    assert out.shape == (3, 12, 8)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(_call(clone, x), out, rtol=1e-5, atol=1e-6)

    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(_call(loaded, x), out, rtol=1e-5, atol=1e-6)
    assert type(loaded.loss).__name__ == "MaskedSparseCELoss"


@pytest.mark.parametrize("name", list(MODELS))
def test_clip_models_pool_over_time(name, tmp_path):
    cfg = TrainConfig(model=name, task="clip", layers=1, units=4)
    model = build_model(cfg, TASKS["clip"], *_stats())
    x = _inputs()
    out = _call(model, x)
    assert out.shape == (3, 7)
    model.save(tmp_path / "c.keras")
    loaded = keras.saving.load_model(tmp_path / "c.keras", safe_mode=True)
    np.testing.assert_allclose(_call(loaded, x), out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, kind", [("gru", "GRU"), ("bilstm", "Bidirectional"), ("frame", "Dense")])
def test_layers_stack(name, kind):
    model = build_model(TrainConfig(model=name, task="expr", layers=3, units=5), TASKS["expr"], *_stats())
    body = [layer for layer in model.layers if type(layer).__name__ == kind]
    assert len(body) == 3 + (kind == "Dense")  # the output head is a Dense too
    assert sum(type(layer).__name__ == "Dropout" for layer in model.layers) == 3
    norm = model.get_layer("standardise")
    np.testing.assert_allclose(np.ravel(norm.mean), _stats()[0], rtol=1e-6)


def test_frames_without_face_ignore_their_embedding():
    model = build_model(TrainConfig(model="gru", task="va", layers=1, units=4), TASKS["va"], *_stats())
    x = _inputs(b=1, t=10)
    x["face"][0, 4] = 0.0
    changed = {"embeddings": x["embeddings"].copy(), "face": x["face"]}
    changed["embeddings"][0, 4] = 100.0
    np.testing.assert_allclose(_call(model, x), _call(model, changed), rtol=1e-6)


def test_avgpool_gives_each_frame_the_window_prediction():
    model = build_model(TrainConfig(model="avgpool", task="au", layers=1, units=4), TASKS["au"], *_stats())
    x = _inputs(b=2, t=9)
    out = _call(model, x)
    assert out.shape == (2, 9, 12)
    np.testing.assert_allclose(out, np.repeat(out[:, :1], 9, axis=1), rtol=1e-6)
    # The mean covers face frames only: changing a no-face frame changes nothing, a face frame does.
    x["face"][:, 0] = 0.0
    base = _call(model, x)
    x["embeddings"][:, 0] += 5.0
    np.testing.assert_allclose(_call(model, x), base, rtol=1e-6)
    x["embeddings"][:, 1] += 5.0
    assert not np.allclose(_call(model, x), base)


def test_registries_list_valid_names():
    assert list(MODELS) == ["gru", "lstm", "bigru", "bilstm", "frame", "avgpool"]
    assert list(TASKS) == ["va", "expr", "au", "clip", "eri"]
    names = "gru, lstm, bigru, bilstm, frame, avgpool"
    with pytest.raises(ConfigError, match=f"unknown model 'tcn' .*choose one of: {names}"):
        TrainConfig(model="tcn").validate()
    with pytest.raises(ConfigError, match="--dropout must be in"):
        TrainConfig(dropout=1.5).validate()
    assert TrainConfig(seq_len=10).resolved().stride == 5


def _y(labels, mask):
    return np.concatenate(
        [np.asarray(labels, np.float32).reshape(len(mask), -1), np.asarray(mask, np.float32)[:, None]], axis=1
    )


def test_ccc_loss_is_one_minus_ccc_on_masked_frames():
    rng = np.random.default_rng(0)
    labels = rng.uniform(-1, 1, (50, 2))
    pred = (0.7 * labels + rng.normal(0, 0.3, (50, 2))).astype(np.float32)
    mask = rng.random(50) > 0.3
    loss = float(MaskedCCCLoss()(_y(labels, mask)[None], pred[None]))
    expected = 1 - np.mean([ccc(labels[mask, k], pred[mask, k]) for k in range(2)])
    assert loss == pytest.approx(expected, abs=1e-5)
    pred2 = pred.copy()
    pred2[~mask] = 9.0  # masked frames do not count
    assert float(MaskedCCCLoss()(_y(labels, mask)[None], pred2[None])) == pytest.approx(loss, abs=1e-6)
    assert float(MaskedCCCLoss()(_y(labels, np.ones(50))[None], labels[None].astype(np.float32))) == pytest.approx(
        0.0, abs=1e-5
    )


def test_masked_ce_and_bce_match_numpy():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(8), size=20).astype(np.float32)
    cls = rng.integers(0, 8, 20)
    mask = rng.random(20) > 0.4
    ce = float(MaskedSparseCELoss()(_y(cls, mask), probs))
    assert ce == pytest.approx(-np.mean(np.log(probs[mask, cls[mask]])), rel=1e-4)
    sig = rng.uniform(0.05, 0.95, (20, 12)).astype(np.float32)
    au = (rng.random((20, 12)) > 0.5).astype(np.float32)
    bce = float(MaskedBCELoss()(_y(au, mask), sig))
    manual = -(au * np.log(sig) + (1 - au) * np.log(1 - sig)).mean(axis=1)[mask].mean()
    assert bce == pytest.approx(manual, rel=1e-4)
    assert float(MaskedSparseCELoss()(_y(cls, np.zeros(20)), probs)) == 0.0
