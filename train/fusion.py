"""Audio-visual models: the face embeddings and the audio features of the same frames, fused (``FUSIONS``).

A fused model has four inputs: ``embeddings [B, T, D]`` and ``face [B, T]`` as a visual model,
``audio [B, T, A]`` and ``heard [B, T]`` (1: the frame has audio). Each stream is standardised
with its own training statistics and gated by its own mask only (:class:`train.models.FaceGate`),
so a frame without a face but with audio still gets a prediction from its audio.

- ``early``: the two gated streams concatenated per frame, then the ``MODEL`` as on one stream.
- ``model``: one encoder per modality (dense + one layer of the ``MODEL``), their hidden states
  concatenated, then the ``MODEL``'s remaining layers (at least one, shared) and the head: the
  model-level fusion of Schoneveld et al. 2021.
- ``late``: one whole ``MODEL`` + head per modality, trained together; their predictions are
  averaged with learned weights (:class:`LateAverage`) over the modalities present in each frame.

Example::

    model = build_fused_model(cfg, TASKS["va"], {"embeddings": (mv, vv), "audio": (ma, va)})
    model({"embeddings": x, "face": f, "audio": a, "heard": h}).shape   # (4, 64, 2)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from core.registry import Registry
from core.tasks import TaskSpec
from train.config import TrainConfig
from train.models import MODELS, FaceGate, ModelSpec, head, trunk

FUSIONS: Registry[str] = Registry("fusion", "--fusion / FUSION")
FUSIONS.register("early", "per-frame features concatenated before the sequence model")
FUSIONS.register("model", "one encoder per modality, hidden states concatenated, a shared sequence model")
FUSIONS.register("late", "one model per modality, predictions averaged with learned weights")


@keras.saving.register_keras_serializable(package="train")
class Either(layers.Layer):
    """1 where either mask is 1: the frames with any input."""

    def call(self, inputs):
        a, b = inputs
        return ops.maximum(ops.cast(a, "float32"), ops.cast(b, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package="train")
class LateAverage(layers.Layer):
    """``sum_m w_m p_m`` over the modalities present, ``w = softmax(logits)`` renormalised per frame
    (per clip: a modality is present if any frame has it); with none present, the plain learned weights."""

    def build(self, input_shape):
        self.logits = self.add_weight(shape=(2,), initializer="zeros", name="logits")

    def call(self, inputs):
        visual, audio, face, heard = inputs
        face, heard = ops.cast(face, visual.dtype), ops.cast(heard, visual.dtype)
        if len(visual.shape) == 3:
            face, heard = ops.expand_dims(face, -1), ops.expand_dims(heard, -1)
        else:
            face, heard = ops.max(face, axis=1, keepdims=True), ops.max(heard, axis=1, keepdims=True)
        w = ops.softmax(self.logits)
        wv, wa = w[0] * face, w[1] * heard
        total = wv + wa
        some = ops.cast(total > 0, visual.dtype)
        wv = some * wv / ops.maximum(total, 1e-6) + (1 - some) * w[0]
        wa = some * wa / ops.maximum(total, 1e-6) + (1 - some) * w[1]
        return wv * visual + wa * audio

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def _stream(name: str, mask: str, stats: tuple) -> tuple:
    mean, variance = (np.asarray(s) for s in stats)
    x_in = keras.Input((None, int(mean.shape[0])), name=name)
    m_in = keras.Input((None,), name=mask)
    x = layers.Normalization(mean=mean, variance=variance, name=f"standardise_{name}")(x_in)
    return x_in, m_in, FaceGate(name=f"gate_{name}")([x, m_in])


def _model_level(spec: ModelSpec, cfg: TrainConfig, task: TaskSpec, xv, xa, present):
    encoded = []
    for name, x in (("visual", xv), ("audio", xa)):
        h = layers.Dense(cfg.units, activation="relu", name=f"{name}_dense")(x)
        encoded.append(spec.body(h, cfg, 1, f"{name}_"))
    h = layers.Concatenate(name="hidden_states")(encoded)
    return head(task, trunk(spec, h, present, cfg, task, max(cfg.layers - 1, 1), "shared_"))


def build_fused_model(cfg: TrainConfig, task: TaskSpec, stats: dict) -> keras.Model:
    """The ``cfg.model`` body fused by ``cfg.fusion``, with ``task``'s head, uncompiled.

    Args:
        stats: ``{"embeddings": (mean, variance), "audio": (mean, variance)}`` of the training frames.
    """
    spec = MODELS[cfg.model]
    FUSIONS[cfg.fusion]
    emb, face, xv = _stream("embeddings", "face", stats["embeddings"])
    aud, heard, xa = _stream("audio", "heard", stats["audio"])
    present = Either(name="any_input")([face, heard])
    if cfg.fusion == "early":
        x = layers.Concatenate(name="early")([xv, xa])
        out = head(task, trunk(spec, x, present, cfg, task))
    elif cfg.fusion == "model":
        out = _model_level(spec, cfg, task, xv, xa, present)
    else:
        outs = [
            head(task, trunk(spec, x, mask, cfg, task, prefix=f"{name}_"), f"{name}_output")
            for name, x, mask in (("visual", xv, face), ("audio", xa, heard))
        ]
        out = LateAverage(name="output", dtype="float32")([*outs, face, heard])
    inputs = {"embeddings": emb, "face": face, "audio": aud, "heard": heard}
    return keras.Model(inputs, out, name=f"{cfg.model}_{cfg.fusion}_{task.name}")
