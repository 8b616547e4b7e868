"""Backbones on real models: the pretrained fer mini-Xception, keras.applications, saved files."""

import dataclasses
import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from extract import backbone_models
from extract.backbones import (
    BACKBONES,
    Backbone,
    load_backbone,
    padded_size,
    resolve_precision,
    to_model_input,
)

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO / "tests" / "media"
SMALL_RGB = (64, 64, 3)


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _rgb(name: str) -> np.ndarray:
    path = MEDIA / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make media`.")
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _crops(n: int, input_size: tuple) -> np.ndarray:
    """n different crops of the real face image, as model input."""
    image = _rgb("single_face.jpg")
    h, w = image.shape[:2]
    side = min(h, w) // 2
    crops = []
    for i in range(n):
        y = (i * 37) % (h - side)
        x = (i * 53) % (w - side)
        crops.append(to_model_input(image[y : y + side, x : x + side], input_size))
    return np.stack(crops)


@pytest.fixture(scope="module")
def fer() -> Backbone:
    return load_backbone("fer", batch_size=4)


@pytest.fixture(scope="module")
def fer_original():
    return keras.models.load_model(backbone_models.fer_model_path(), compile=False)


def _fer_reference(model, images: np.ndarray) -> np.ndarray:
    """fer's own preprocessing in NumPy, then the pooled add_4 features of the original model."""
    x = (images.astype(np.float32) / 255.0 - 0.5) * 2.0
    features = keras.Model(model.inputs, model.get_layer("add_4").output)
    return np.asarray(features.predict_on_batch(x)).mean(axis=(1, 2))


class _RecordingModel:
    """Passes calls to a model and records the batch shapes it receives."""

    def __init__(self, model):
        self.model = model
        self.shapes = []

    def predict_on_batch(self, batch):
        self.shapes.append(batch.shape)
        return self.model.predict_on_batch(batch)


def test_registry_lists_the_backbones_with_their_input_sizes():
    assert sorted(BACKBONES) == ["efficientnetb0", "fer", "mobilenetv2", "resnet50", "vgg16"]
    assert BACKBONES["fer"].input_size == (64, 64, 1)
    for name in ("efficientnetb0", "mobilenetv2", "resnet50", "vgg16"):
        assert BACKBONES[name].input_size == (224, 224, 3)
        assert BACKBONES[name].name == name
    assert "caffe" in BACKBONES["resnet50"].preprocessing
    with pytest.raises(dataclasses.FrozenInstanceError):
        BACKBONES["fer"].input_size = (1, 1, 1)


def test_unknown_backbone_error_lists_valid_names():
    with pytest.raises(ValueError) as info:
        load_backbone("resnet18")
    message = str(info.value)
    assert "Unknown backbone 'resnet18'" in message
    for name in (*BACKBONES, "file:<path.keras>"):
        assert name in message
    assert "\n" not in message


def test_module_imports_without_keras():
    code = (
        "import sys, extract.backbones as b; "
        "b.to_model_input(__import__('numpy').zeros((9, 9, 3), 'uint8'), (4, 4, 1)); "
        "heavy = [m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_to_model_input_shrinks_grows_and_converts_to_gray():
    image = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    gray = to_model_input(image, (64, 64, 1))
    assert gray.shape == (64, 64, 1) and gray.dtype == np.uint8
    expected = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(gray[..., 0], expected)

    small = image[:20, :30]
    grown = to_model_input(small, (48, 40, 3))
    assert grown.shape == (48, 40, 3) and grown.dtype == np.uint8
    np.testing.assert_array_equal(grown, cv2.resize(small, (40, 48), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(to_model_input(image, (120, 90, 3)), image)


def test_to_model_input_rejects_bad_images():
    with pytest.raises(ValueError, match=r"uint8 RGB image \(h, w, 3\); got float32 \(8, 8, 3\)"):
        to_model_input(np.zeros((8, 8, 3), np.float32), (4, 4, 1))
    with pytest.raises(ValueError, match=r"got uint8 \(8, 8, 4\)"):
        to_model_input(np.zeros((8, 8, 4), np.uint8), (4, 4, 1))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        to_model_input(np.zeros((8, 8, 3), np.uint8), (4, 4, 2))


def test_fer_is_the_pretrained_mini_xception(fer):
    assert fer.input_size == (64, 64, 1)
    assert fer.embedding_dim == 128
    assert fer.embedding_layer == "add_4"
    assert fer.weights_sha256 == _sha256(backbone_models.fer_model_path())
    assert fer.precision == "float32"
    assert fer.model.inputs[0].dtype == "uint8"
    assert fer.metadata() == {
        "backbone": "fer",
        "embedding_dim": 128,
        "input_size": (64, 64, 1),
        "preprocessing": BACKBONES["fer"].preprocessing,
        "weights_sha256": fer.weights_sha256,
        "embedding_layer": "add_4",
    }


def test_fer_embed_is_deterministic_and_matches_a_direct_model_call(fer, fer_original):
    images = _crops(8, fer.input_size)
    first = fer.embed(images)
    assert first.shape == (8, 128) and first.dtype == np.float32
    np.testing.assert_array_equal(first, fer.embed(images))
    np.testing.assert_allclose(first, _fer_reference(fer_original, images), atol=1e-5)
    assert np.abs(first).max() > 0.1
    assert np.abs(first[0] - first[1]).max() > 1e-3


def test_padded_size_buckets():
    assert [padded_size(n, 256) for n in (1, 8, 9, 16, 17, 100, 128, 129, 256)] == [
        8,
        8,
        16,
        16,
        32,
        128,
        128,
        256,
        256,
    ]
    assert padded_size(3, 4) == 4 and padded_size(20, 24) == 24


def test_a_sliced_model_pads_to_whole_slices_not_to_a_power_of_two():
    # LiteRT runs 32 at a time: 130 crops cost 5 slices, not the 8 of a 256 bucket.
    sizes = (1, 9, 20, 32, 33, 100, 130, 250, 256)
    assert [padded_size(n, 256, 32) for n in sizes] == [8, 16, 32, 32, 64, 128, 160, 256, 256]
    assert padded_size(100, 96, 32) == 96


def test_embed_pads_the_last_batch_to_a_bucket(fer):
    images = _crops(6, fer.input_size)
    recorder = _RecordingModel(fer.model)
    padded = dataclasses.replace(fer, model=recorder, batch_size=4).embed(images)
    assert recorder.shapes == [(4, 64, 64, 1), (4, 64, 64, 1)]
    recorder.shapes.clear()
    dataclasses.replace(fer, model=recorder, batch_size=64).embed(_crops(20, fer.input_size))
    assert recorder.shapes == [(32, 64, 64, 1)]
    unpadded = np.asarray(fer.model.predict_on_batch(images))
    np.testing.assert_allclose(padded, unpadded, atol=1e-5)
    np.testing.assert_allclose(fer.embed(images[4:]), unpadded[4:], atol=1e-5)
    assert dataclasses.replace(fer, model=recorder).embed(images[:0]).shape == (0, 128)


def test_embed_rejects_wrong_shape_or_dtype(fer):
    with pytest.raises(ValueError, match=r"uint8 images of shape \(N, 64, 64, 1\); got float32"):
        fer.embed(np.zeros((2, 64, 64, 1), np.float32))
    with pytest.raises(ValueError, match=r"got uint8 \(2, 64, 64, 3\)"):
        fer.embed(np.zeros((2, 64, 64, 3), np.uint8))


def test_fer_classifier_gives_a_distribution_on_a_real_face(fer_original):
    image = to_model_input(_rgb("single_face.jpg"), (64, 64, 1))[None]
    probs = fer_original.predict_on_batch((image.astype(np.float32) / 255.0 - 0.5) * 2.0)
    assert probs.shape == (1, len(backbone_models.FER_CLASSES))
    assert np.all(probs >= 0) and abs(float(probs.sum()) - 1.0) < 1e-4


def test_fer_weights_file_round_trip(tmp_path, fer, fer_original):
    tuned = keras.models.clone_model(fer_original)
    tuned.set_weights([w * 1.1 for w in fer_original.get_weights()])
    path = tmp_path / "fer_tuned.weights.h5"
    tuned.save_weights(path)
    loaded = load_backbone("fer", weights=str(path))
    assert loaded.weights_sha256 == _sha256(path)
    images = _crops(4, fer.input_size)
    embeddings = loaded.embed(images)
    np.testing.assert_allclose(embeddings, _fer_reference(tuned, images), atol=1e-4)
    assert np.abs(embeddings - fer.embed(images)).max() > 1e-2


def test_fer_rejects_another_input_size_and_bad_precision():
    with pytest.raises(ValueError, match=r"fixed input size \(64, 64, 1\)"):
        load_backbone("fer", input_size=(96, 96, 1))
    with pytest.raises(ValueError, match="Unknown precision 'int8'. Valid: float32, bfloat16"):
        load_backbone("fer", precision="int8")
    assert resolve_precision("auto") == "float32"  # CPU only in CI: no mixed precision.


def test_bfloat16_precision_is_mixed_and_returns_float32(fer):
    images = _crops(4, fer.input_size)
    mixed = load_backbone("fer", precision="bfloat16", batch_size=4)
    out = mixed.embed(images)
    assert mixed.precision == "bfloat16" and out.dtype == np.float32
    reference = fer.embed(images)
    assert np.abs(out - reference).max() < 0.1
    assert not np.array_equal(out, reference)


@pytest.mark.slow
def test_random_init_warns_and_is_reproducible(caplog):
    with caplog.at_level(logging.WARNING, logger="extract.backbone_models"):
        first = load_backbone("mobilenetv2", input_size=SMALL_RGB, batch_size=2)
    assert "RANDOM weights (seed=0)" in caplog.text
    assert "WEIGHTS=" in caplog.text
    assert first.weights_sha256 == "random-init:seed=0"
    assert first.embedding_dim == 1280 and first.input_size == SMALL_RGB
    assert first.embedding_layer == "out_relu"
    images = _crops(2, SMALL_RGB)
    again = load_backbone("mobilenetv2", input_size=SMALL_RGB, batch_size=2)
    np.testing.assert_array_equal(first.embed(images), again.embed(images))
    other = load_backbone("mobilenetv2", input_size=SMALL_RGB, seed=1, batch_size=2)
    assert other.weights_sha256 == "random-init:seed=1"
    assert not np.allclose(first.embed(images), other.embed(images), rtol=1e-2, atol=0)


@pytest.mark.slow
def test_application_weights_file_round_trip(tmp_path, caplog):
    keras.utils.set_random_seed(7)
    source = keras.applications.MobileNetV2(include_top=False, pooling="avg", weights=None, input_shape=SMALL_RGB)
    path = tmp_path / "mobilenet_v2_notop.weights.h5"
    source.save_weights(path)
    with caplog.at_level(logging.WARNING):
        loaded = load_backbone("mobilenetv2", weights=str(path), input_size=SMALL_RGB, batch_size=2)
    assert "RANDOM" not in caplog.text
    assert loaded.weights_sha256 == _sha256(path)
    images = _crops(2, SMALL_RGB)
    direct = source.predict_on_batch(keras.applications.mobilenet_v2.preprocess_input(images.astype(np.float32)))
    scale = np.abs(direct).max()
    assert scale > 0
    np.testing.assert_allclose(loaded.embed(images), direct, rtol=1e-4, atol=1e-4 * scale)

    with pytest.raises(ValueError, match="Weights file for backbone 'mobilenetv2' not found"):
        load_backbone("mobilenetv2", weights=str(tmp_path / "missing.weights.h5"))


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_weights_of_another_architecture_are_rejected_naming_the_file(tmp_path, fer_original):
    path = tmp_path / "fer.weights.h5"
    fer_original.save_weights(path)
    with pytest.raises(ValueError) as info:
        load_backbone("mobilenetv2", weights=str(path), input_size=SMALL_RGB)
    assert str(info.value).startswith(f"{path}: cannot load these weights into backbone")


@pytest.fixture(scope="module")
def tiny_keras_file(tmp_path_factory):
    inputs = keras.Input((16, 16, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(8, activation="tanh", name="hidden")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    model.save(path)
    return path, model


def test_file_backbone_default_layer_is_the_input_of_the_last(tiny_keras_file):
    path, model = tiny_keras_file
    backbone = load_backbone(f"file:{path}", batch_size=3)
    assert backbone.name == f"file:{path}"
    assert backbone.input_size == (16, 16, 3)
    assert backbone.embedding_layer == "hidden" and backbone.embedding_dim == 8
    assert backbone.weights_sha256 == _sha256(path)
    assert "0..255" in backbone.preprocessing
    images = np.random.default_rng(1).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    hidden = keras.Model(model.inputs, model.get_layer("hidden").output)
    expected = hidden.predict_on_batch(images.astype(np.float32))
    np.testing.assert_allclose(backbone.embed(images), expected, atol=1e-5)


def test_file_backbone_selects_and_pools_a_named_layer(tiny_keras_file):
    path, model = tiny_keras_file
    backbone = load_backbone(f"file:{path}", embedding_layer="conv", batch_size=2)
    assert backbone.embedding_layer == "conv" and backbone.embedding_dim == 4
    images = np.random.default_rng(2).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    conv = keras.Model(model.inputs, model.get_layer("conv").output)
    expected = conv.predict_on_batch(images.astype(np.float32)).mean(axis=(1, 2))
    np.testing.assert_allclose(backbone.embed(images), expected, atol=1e-5)

    with pytest.raises(ValueError) as info:
        load_backbone(f"file:{path}", embedding_layer="fc7")
    assert str(info.value) == (
        f"Embedding layer 'fc7' is not in backbone 'file:{path}'. Its layers: pixels, scale, conv, pool, hidden, head."
    )


def test_file_backbone_accepts_a_sequential_model(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(5, 3, name="conv"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(3, name="head"),
        ]
    )
    path = tmp_path / "sequential.keras"
    model.save(path)
    backbone = load_backbone(f"file:{path}", batch_size=2)
    assert backbone.embedding_layer == "pool" and backbone.embedding_dim == 5
    images = np.random.default_rng(3).integers(0, 256, (3, 12, 12, 1), dtype=np.uint8)
    pooled = keras.Model(model.inputs, model.get_layer("pool").output)
    expected = pooled.predict_on_batch(images.astype(np.float32))
    np.testing.assert_allclose(backbone.embed(images), expected, atol=1e-4)


def test_file_backbone_errors_name_the_file(tmp_path, tiny_keras_file):
    missing = tmp_path / "missing.keras"
    with pytest.raises(ValueError, match=f"Model file not found: {missing}"):
        load_backbone(f"file:{missing}")
    not_keras = tmp_path / "notes.keras"
    not_keras.write_text("not a model")
    with pytest.raises(ValueError) as info:
        load_backbone(f"file:{not_keras}")
    assert str(info.value).startswith(f"{not_keras}: not a .keras archive")
    assert "\n" not in str(info.value)
    path, _ = tiny_keras_file
    with pytest.raises(ValueError, match="carries its own weights"):
        load_backbone(f"file:{path}", weights=str(path))


EQUIVALENCE_SCRIPT = """
import sys
import numpy as np
import keras
from extract.backbones import load_backbone
images = np.load(sys.argv[1])
backbone = load_backbone("fer", batch_size=8)
np.save(sys.argv[2], backbone.embed(images))
print(keras.backend.backend())
"""


@pytest.mark.slow
def test_tensorflow_and_jax_backends_give_the_same_fer_embeddings(tmp_path):
    images = _crops(10, (64, 64, 1))
    np.save(tmp_path / "images.npy", images)
    runs = {}
    for backend in ("tensorflow", "jax"):
        env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
        out = tmp_path / f"{backend}.npy"
        command = [sys.executable, "-c", EQUIVALENCE_SCRIPT, str(tmp_path / "images.npy"), str(out)]
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        runs[backend] = (process, out)
    outputs = {}
    for backend, (process, out) in runs.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert stdout.strip().splitlines()[-1] == backend
        outputs[backend] = np.load(out)
    assert outputs["tensorflow"].shape == (10, 128)
    assert np.abs(outputs["tensorflow"]).max() > 0.1
    assert np.abs(outputs["tensorflow"] - outputs["jax"]).max() < 1e-4
