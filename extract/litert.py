"""Where stage one runs its backbone: Keras, or the LiteRT copy of the same model, without TensorFlow.

On a CPU, TensorFlow's import costs 2.7-4.5 core-seconds in every process, and fer's mini-Xception
0.74-0.88 core-ms an image on it; LiteRT (``ai-edge-litert``, XNNPACK) imports in 0.08 s and runs
the same weights at 0.34 core-ms an image (in slices of 32), within 1.1e-6 of TensorFlow's float32 outputs
(docs/benchmarks.md). :func:`load_inference_backbone` is what stage one loads: with
``runtime="auto"`` it takes the LiteRT copy on the TensorFlow backend at float32, and Keras
everywhere else (JAX on a GPU, 16-bit precisions).

The copy is made once per machine: Keras exports the uint8 -> embedding model
(``model.export(format="litert")``, which imports TensorFlow that one time) into ``models_dir``,
named by a key of everything that shapes it (backbone, weights checksum, embedding layer, input
size, seed, Keras and TensorFlow versions). A ``.json`` beside it holds the backbone's metadata and
is written last, so a copy counts only once whole; an unreadable copy is exported again.

Example::

    backbone = load_inference_backbone("fer", runtime="auto")  # the copy in ~/.cache/emotion-video/models
    backbone.backend, backbone.embed(np.zeros((3, 64, 64, 1), np.uint8)).shape
    # ('litert', (3, 128))
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from extract import backbone_models as bm

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "keras", "litert")
EXPORT_FORMAT = 1  # bump when the export changes what a copy computes: older copies are then ignored
# Where the copies live without --models-dir: the user's cache, shared by every cache_dir and analysis.
MODELS_SUBDIR = Path("emotion-video") / "models"


def default_models_dir() -> Path:
    """``$XDG_CACHE_HOME/emotion-video/models``, or ``~/.cache/emotion-video/models``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / MODELS_SUBDIR


def configured_backend() -> str:
    """The Keras backend a process would get, read as Keras reads it, without importing Keras."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    config = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def litert_unavailable(precision: str) -> str:
    """Why the LiteRT copy can't serve this run (empty: it can)."""
    if importlib.util.find_spec("ai_edge_litert") is None:
        return "needs the ai-edge-litert package: run `make setup`"
    backend = configured_backend()
    if backend != "tensorflow":
        return f"is exported with the TensorFlow backend, not KERAS_BACKEND={backend}"
    if precision not in ("auto", "float32"):
        return f"runs float32 only, not precision {precision}"
    return ""


def resolve_runtime(runtime: str, precision: str) -> str:
    """``keras`` or ``litert`` for this run; ``auto``: LiteRT where it can serve, else Keras."""
    if runtime not in RUNTIMES:
        raise ValueError(f"Unknown runtime '{runtime}'. Valid: {', '.join(RUNTIMES)}.")
    if runtime == "keras":
        return "keras"
    why_not = litert_unavailable(precision)
    if runtime == "litert" and why_not:
        raise ValueError(f"--runtime litert {why_not}; or pass --runtime keras")
    return "keras" if why_not else "litert"


def runtime_for_cache(runtime: str, cached_backend: str) -> str:
    """``runtime``, except that ``auto`` goes on with Keras on a cache that Keras began
    (``cached_backend``: its ``CacheMeta.backend``), so that one cache is made by one runtime."""
    if runtime == "auto" and cached_backend and cached_backend != "litert":
        return "keras"
    return runtime


def _version(*dists: str) -> str:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def copy_key(name: str, weights: str, embedding_layer: str, input_size, seed: int) -> dict:
    """Everything that shapes a LiteRT copy; its hash names the file."""
    from extract.backbones import BACKBONES, FILE_PREFIX, check_name

    if name.startswith(FILE_PREFIX):
        sha = bm.sha256_file(name[len(FILE_PREFIX) :])
    else:
        check_name(name)
        sha = BACKBONES[name].weights_sha(weights, seed)
    return {
        "backbone": name,
        "weights_sha256": sha,
        "embedding_layer": embedding_layer or "",
        "input_size": list(input_size) if input_size else None,
        "seed": seed if sha.startswith("random-init") else None,
        "keras": _version("keras"),
        "tensorflow": _version("tensorflow", "tensorflow-cpu"),
        "format": EXPORT_FORMAT,
    }


def copy_path(models_dir: str | Path, key: dict) -> Path:
    """``<models_dir>/<backbone>-<hash of key>.tflite`` (its metadata: the same name, ``.json``)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(key["backbone"]).name)
    return Path(models_dir) / f"{stem}-{digest}.tflite"


class LiteRTModel:
    """``predict_on_batch`` on a LiteRT interpreter, in slices of at most ``slice_size`` images.

    A slice of 32 keeps fer's activations in the core's cache: 0.34 core-ms an image, against 0.49
    for one call on 256 (docs/benchmarks.md), with the same outputs bit for bit (each image's
    arithmetic does not depend on the batch). The interpreter is resized when the slice shape
    changes (a batch's last slice, ``extract.backbones.padded_size``): 0.1 ms.
    """

    slice_size = 32

    def __init__(self, path: str | Path, num_threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self._interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape = None

    def _invoke(self, images: np.ndarray) -> np.ndarray:
        if images.shape != self._shape:
            self._interpreter.resize_tensor_input(self._input, list(images.shape))
            self._interpreter.allocate_tensors()
            self._shape = images.shape
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(images))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output)  # a copy: the next invoke does not change it

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        step = self.slice_size
        if len(batch) <= step:
            return self._invoke(batch)
        return np.concatenate([self._invoke(batch[start : start + step]) for start in range(0, len(batch), step)])


class ExportError(ValueError):
    """The LiteRT copy could not be made: an op the converter lacks, or a models folder not writable."""


def _unwritable(path: Path, err: OSError) -> ExportError:
    return ExportError(f"{path.parent}: cannot write the LiteRT copy ({err.strerror or err}); pass --models-dir")


def export_copy(path: Path, name: str, weights: str, embedding_layer: str, input_size, seed: int) -> dict:
    """Builds the Keras backbone, exports its uint8 -> embedding model to ``path``; returns its metadata."""
    from extract.backbones import load_backbone

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tflite")  # Keras wants the .tflite suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # first: a folder that can't be written fails before the build
    except OSError as err:
        raise _unwritable(path, err) from err
    backbone = load_backbone(
        name, weights=weights or None, embedding_layer=embedding_layer or None, seed=seed, input_size=input_size
    )
    try:
        backbone.model.export(str(tmp), format="litert", verbose=False)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _unwritable(path, err) from err
    except Exception as err:  # the converter's errors share no narrower base class
        tmp.unlink(missing_ok=True)
        raise ExportError(f"backbone '{name}': Keras could not export it for LiteRT ({bm.first_line(err)})") from err
    meta = {**backbone.metadata(), "keras_version": backbone.keras_version}
    meta["input_size"] = list(meta["input_size"])
    os.replace(tmp, path)
    sidecar = path.with_suffix(".json.partial")
    sidecar.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(sidecar, path.with_suffix(".json"))  # last: the copy counts once both files are whole
    log.info("exported backbone '%s' for LiteRT to %s (once per machine)", name, path)
    return meta


_META_KEYS = ("input_size", "embedding_dim", "preprocessing", "weights_sha256", "embedding_layer", "keras_version")


def _open_copy(path: Path, num_threads: int) -> tuple[LiteRTModel, dict] | None:
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        missing = [key for key in _META_KEYS if key not in meta]
        if missing:
            raise ValueError(f"its metadata lacks {', '.join(missing)}")
        return LiteRTModel(path, num_threads), meta
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RuntimeError, AttributeError) as err:
        log.warning("%s: unreadable LiteRT copy (%s); exporting it again", path, bm.first_line(err))
        return None


def load_litert_backbone(
    name: str,
    weights: str = "",
    embedding_layer: str = "",
    *,
    models_dir: str | Path = "",
    seed: int = 0,
    input_size=None,
    batch_size: int = 256,
    num_threads: int = 0,
):
    """The backbone ``load_backbone`` would build, run by LiteRT from its copy (exported on first use)."""
    from extract.backbones import Backbone

    key = copy_key(name, weights, embedding_layer, input_size, seed)
    path = copy_path(models_dir or default_models_dir(), key)
    threads = num_threads or os.cpu_count() or 1
    opened = _open_copy(path, threads)
    if opened is None:
        export_copy(path, name, weights, embedding_layer, input_size, seed)
        opened = _open_copy(path, threads)
    if opened is None:
        raise ValueError(f"{path}: the LiteRT copy just exported does not load; pass --runtime keras")
    model, meta = opened
    return Backbone(
        name=name,
        model=model,
        input_size=tuple(meta["input_size"]),
        embedding_dim=int(meta["embedding_dim"]),
        preprocessing=meta["preprocessing"],
        weights_sha256=meta["weights_sha256"],
        embedding_layer=meta["embedding_layer"],
        batch_size=batch_size,
        backend="litert",
        backend_version=_version("ai-edge-litert"),
        keras_version=meta["keras_version"],
    )


def load_inference_backbone(
    name: str,
    weights: str = "",
    embedding_layer: str = "",
    precision: str = "auto",
    *,
    runtime: str = "auto",
    models_dir: str | Path = "",
    batch_size: int = 256,
    input_size=None,
):
    """Stage one's backbone: ``extract.backbones.load_backbone`` on ``runtime="keras"``, the LiteRT
    copy on ``litert`` (``auto``: LiteRT on the TensorFlow backend at float32, else Keras)."""
    from extract.backbones import FILE_PREFIX, load_backbone

    sources = [weights, name[len(FILE_PREFIX) :] if name.startswith(FILE_PREFIX) else ""]
    missing = any(path and not Path(path).is_file() for path in sources)  # Keras' loader names the file
    if not missing and resolve_runtime(runtime, precision) == "litert":
        try:
            return load_litert_backbone(
                name, weights, embedding_layer, models_dir=models_dir, batch_size=batch_size, input_size=input_size
            )
        except ExportError as err:
            if runtime != "auto":
                raise ValueError(f"{err}; or pass --runtime keras") from err
            log.warning("%s: running it with Keras instead", err)
    return load_backbone(
        name,
        weights=weights or None,
        embedding_layer=embedding_layer or None,
        precision=precision,
        batch_size=batch_size,
        input_size=input_size,
    )
