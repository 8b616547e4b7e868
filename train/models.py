"""Sequence models on cached embeddings (``MODELS``) and the output heads of each task level.

Every model takes two inputs, ``embeddings [B, T, D]`` and ``face [B, T]`` (1: a face was found),
standardises the embeddings with training-set statistics stored in the model (a Normalization
layer), zeroes the frames without a face (after standardisation, so "no face" is the mean
embedding, not an outlier) and appends the face flag as one more feature.

- ``gru``, ``lstm``, ``bigru``, ``bilstm``: ``--layers`` recurrent layers of ``--units``.
- ``frame``: a per-frame MLP, no temporal context (baseline).
- ``avgpool``: temporal averaging (Kahou et al. 2015): the mean embedding of the window's face
  frames -> MLP; frame tasks give every frame of the window that one prediction.

Frame tasks end in a per-frame Dense head ``[B, T, K]``; clip tasks pool the body's outputs over
the face frames (or, for ``avgpool``, use its pooled vector) into ``[B, K]``.

Example::

    model = build_model(TrainConfig(model="gru", task="expr"), TASKS["expr"], mean, variance)
    model({"embeddings": x, "face": f}).shape    # x [4, 64, 128], f [4, 64]
    # (4, 64, 8)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
from keras import layers, ops

from core.registry import Registry
from core.tasks import TaskSpec
from train.config import TrainConfig


@keras.saving.register_keras_serializable(package="train")
class FaceGate(layers.Layer):
    """``[x * face, face]``: zeroes the frames without a face and appends the flag."""

    def call(self, inputs):
        x, face = inputs
        f = ops.expand_dims(ops.cast(face, x.dtype), -1)
        return ops.concatenate([x * f, f], axis=-1)

    def compute_output_shape(self, input_shape):
        x_shape = input_shape[0]
        return (*x_shape[:-1], None if x_shape[-1] is None else x_shape[-1] + 1)


@keras.saving.register_keras_serializable(package="train")
class MaskedMean(layers.Layer):
    """Mean over time of ``x [B, T, F]`` on the frames where ``face [B, T]`` is 1 (zeros if none)."""

    def call(self, inputs):
        x, face = inputs
        f = ops.expand_dims(ops.cast(face, x.dtype), -1)
        return ops.sum(x * f, axis=1) / ops.maximum(ops.sum(f, axis=1), 1.0)

    def compute_output_shape(self, input_shape):
        x_shape = input_shape[0]
        return (x_shape[0], x_shape[-1])


@keras.saving.register_keras_serializable(package="train")
class BroadcastTime(layers.Layer):
    """Repeats ``v [B, F]`` along the time axis of ``ref [B, T, ...]`` -> ``[B, T, F]``."""

    def call(self, inputs):
        v, ref = inputs
        return ops.expand_dims(v, 1) + ops.zeros_like(ref[..., :1], dtype=v.dtype)

    def compute_output_shape(self, input_shape):
        v_shape, ref_shape = input_shape
        return (v_shape[0], ref_shape[1], v_shape[-1])


def _recurrent(cell: type, bidirectional: bool) -> Callable:
    def body(x, cfg: TrainConfig, n_layers: int | None = None, prefix: str = ""):
        for i in range(cfg.layers if n_layers is None else n_layers):
            rnn = cell(cfg.units, return_sequences=True, name=f"{prefix}{cell.__name__.lower()}_{i}")
            x = (
                layers.Bidirectional(rnn, name=f"{prefix}bi_{rnn.name.removeprefix(prefix)}")(x)
                if bidirectional
                else rnn(x)
            )
            x = layers.Dropout(cfg.dropout, name=f"{prefix}dropout_{i}")(x)
        return x

    return body


def _mlp(x, cfg: TrainConfig, n_layers: int | None = None, prefix: str = ""):
    for i in range(cfg.layers if n_layers is None else n_layers):
        x = layers.Dense(cfg.units, activation="relu", name=f"{prefix}dense_{i}")(x)
        x = layers.Dropout(cfg.dropout, name=f"{prefix}dropout_{i}")(x)
    return x


@dataclass(frozen=True)
class ModelSpec:
    """One MODEL: ``body(x, cfg, n_layers=None, prefix="")`` maps ``[B, T, F]`` to ``[B, T, F']`` (or,
    when ``pooled``, the model averages the window first and ``body`` maps ``[B, F]`` to ``[B, F']``)
    with ``n_layers`` layers (None: ``cfg.layers``) whose names start with ``prefix`` (``train.fusion``
    builds one body per modality).

    What the evaluator needs travels with the entry: ``baseline`` (the report compares temporal
    models against these) and ``context`` (False: each frame is predicted alone, so ``make
    predict`` copies the nearest face frame's prediction to a face-less frame).
    """

    body: Callable
    pooled: bool
    description: str
    baseline: bool = False
    context: bool = True


MODELS: Registry[ModelSpec] = Registry("model", "--model / MODEL")
MODELS.register("gru", ModelSpec(_recurrent(layers.GRU, False), False, "stacked GRU"))
MODELS.register("lstm", ModelSpec(_recurrent(layers.LSTM, False), False, "stacked LSTM"))
MODELS.register("bigru", ModelSpec(_recurrent(layers.GRU, True), False, "stacked bidirectional GRU"))
MODELS.register("bilstm", ModelSpec(_recurrent(layers.LSTM, True), False, "stacked bidirectional LSTM"))
MODELS.register(
    "frame", ModelSpec(_mlp, False, "per-frame MLP, no temporal context (baseline)", baseline=True, context=False)
)
MODELS.register(
    "avgpool", ModelSpec(_mlp, True, "mean embedding of the window -> MLP (Kahou et al. 2015 baseline)", baseline=True)
)


def model_spec(name: str) -> ModelSpec | None:
    """The entry of a run's ``model``: a MODELS name, or ``joint-<name>`` (the end-to-end CNN+RNN
    built on that entry); None for other names (fine-tuned backbones)."""
    return MODELS.get(name.removeprefix("joint-"))


def trunk(spec: ModelSpec, x, mask, cfg: TrainConfig, task: TaskSpec, n_layers: int | None = None, prefix: str = ""):
    """``spec``'s body on ``x [B, T, F]`` shaped for ``task``'s level: pooled over ``mask`` (1: the
    frame has input) where the model or the task is window-level."""
    if spec.pooled:
        h = spec.body(MaskedMean(name=f"{prefix}window_mean")([x, mask]), cfg, n_layers, prefix)
        return BroadcastTime(name=f"{prefix}every_frame")([h, x]) if task.level == "frame" else h
    h = spec.body(x, cfg, n_layers, prefix)
    return MaskedMean(name=f"{prefix}clip_mean")([h, mask]) if task.level == "clip" else h


def head(task: TaskSpec, h, name: str = "output"):
    """``task``'s head on ``h``: its outputs and activation, in float32 under any dtype policy. (Built
    after the body, as layer creation order sets the seeds an unseeded layer draws.)"""
    return layers.Dense(task.outputs, activation=task.activation, name=name, dtype="float32")(h)


def build_model(cfg: TrainConfig, task: TaskSpec, mean: np.ndarray, variance: np.ndarray) -> keras.Model:
    """The ``cfg.model`` body with ``task``'s head, uncompiled.

    Args:
        cfg: model, layers, units, dropout. task: output size, activation and level.
        mean, variance: ``[D]`` training-embedding statistics, stored in the model.
    """
    spec = MODELS[cfg.model]
    dim = int(np.asarray(mean).shape[0])
    emb = keras.Input((None, dim), name="embeddings")
    face = keras.Input((None,), name="face")
    x = layers.Normalization(mean=np.asarray(mean), variance=np.asarray(variance), name="standardise")(emb)
    x = FaceGate(name="face_gate")([x, face])
    out = head(task, trunk(spec, x, face, cfg, task))
    return keras.Model({"embeddings": emb, "face": face}, out, name=f"{cfg.model}_{task.name}")
