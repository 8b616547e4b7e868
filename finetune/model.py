"""Backbone + small head, built so that the saved ``.keras`` file is a stage-one backbone as is.

The model takes pixel values 0..255 (float32, (H, W, C)): the backbone's preprocessing is built
from stock Keras layers inside it (no Lambda, so it loads with ``safe_mode=True``). Its layers:

``pixels`` -> preprocessing -> ``backbone`` (the registry CNN cut at its embedding layer) ->
global average pooling -> [dropout -> Dense(relu)] ``embedding`` -> ``head`` (the task's outputs)

``head`` is the last layer and reads ``embedding`` directly, so ``BACKBONE=file:<model.keras>``
picks ``embedding`` by default (extract takes the layer that feeds the last one).

Example::

    model = build_model("fer", (), "pretrained", "", TASKS["expr"], embedding_dim=0, dropout=0.0, seed=0)
    [layer.name for layer in model.layers][-2:]
    # ['embedding', 'head']
    set_trainable(model, blocks=2, train_batchnorm=False)  # the top two blocks of the backbone
"""

from __future__ import annotations

import random

import keras
import numpy as np

from core.tasks import TaskSpec
from extract.backbones import BACKBONES

EMBEDDING_LAYER = "embedding"
BACKBONE_LAYER = "backbone"
RANDOM_INIT_BN_MOMENTUM = 0.9


def build_model(
    backbone: str,
    input_size: tuple,
    init: str,
    weights: str,
    task: TaskSpec,
    embedding_dim: int,
    dropout: float,
    seed: int,
) -> keras.Model:
    """The classifier/regressor to fine-tune (see the module doc for its layers).

    Args:
        backbone: a ``BACKBONES`` name whose entry has ``preprocess_layers``.
        input_size: (H, W, C) for resizable backbones; empty: the registry default.
        init: ``pretrained`` (the registry's weights, or ``weights``) or ``random`` (re-initialised
            from ``seed``, BatchNormalization momentum at most ``RANDOM_INIT_BN_MOMENTUM``).
        weights: local weights file for the backbone, or "".
        task: the head's outputs and activation.
        embedding_dim: 0: ``embedding`` is the pooled features; > 0: a Dense(relu) of that width.
        dropout: before that Dense (only when ``embedding_dim > 0``).
        seed: seeds the new layers (and the backbone under ``init="random"``).

    Returns:
        A Functional model taking float32 pixels 0..255, with the backbone frozen.
    """
    spec = BACKBONES[backbone]
    if spec.preprocess_layers is None:
        tunable = sorted(n for n, b in BACKBONES.items() if b.preprocess_layers is not None)
        raise ValueError(
            f"backbone '{backbone}' has no preprocess_layers in its extract.backbones.BACKBONES entry; "
            f"fine-tunable: {', '.join(tunable)}"
        )
    built = spec.builder(weights=weights or None, seed=seed, input_size=tuple(input_size) or None)
    features = keras.Model(built.model.inputs, built.model.get_layer(built.embedding_layer).output, name=BACKBONE_LAYER)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        keras.utils.set_random_seed(seed)
        if init == "random":
            features = keras.models.clone_model(features)  # fresh initialisers, same architecture
            for layer in features.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    # Applications use momentum 0.999: moving statistics trained from scratch would
                    # stay near their initial values for thousands of steps and ruin inference.
                    layer.momentum = min(layer.momentum, RANDOM_INIT_BN_MOMENTUM)
        inputs = keras.Input(shape=tuple(built.input_size), dtype="float32", name="pixels")
        x = inputs
        for layer in spec.preprocess_layers():
            x = layer(x)
        x = features(x)
        if embedding_dim:
            x = keras.layers.GlobalAveragePooling2D(name="pooled")(x)
            if dropout:
                x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
            x = keras.layers.Dense(embedding_dim, activation="relu", name=EMBEDDING_LAYER)(x)
        else:
            x = keras.layers.GlobalAveragePooling2D(name=EMBEDDING_LAYER)(x)
        outputs = keras.layers.Dense(task.outputs, activation=task.activation, name="head")(x)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    features.trainable = False
    return keras.Model(inputs, outputs, name=f"{backbone}_{task.name}_finetuned")


def block_starts(features: keras.Model) -> list[int]:
    """Positions in ``features.layers`` just after each block boundary.

    A block ends at a merge layer (Add/Concatenate: residual and Inception-style blocks); a plain
    stack without merges (VGG) ends its blocks at pooling layers.
    """
    merges = (keras.layers.Add, keras.layers.Concatenate)
    pools = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
    ends = [i for i, layer in enumerate(features.layers) if isinstance(layer, merges)]
    if not ends:
        ends = [i for i, layer in enumerate(features.layers) if isinstance(layer, pools)]
    return [i + 1 for i in ends]


def set_trainable(model: keras.Model, blocks: int, train_batchnorm: bool) -> list[str]:
    """Unfreezes the backbone's top ``blocks`` blocks (-1: all); the rest stays frozen.

    Layers after the last block boundary always count as part of the top block. BatchNormalization
    layers stay frozen (inference mode) unless ``train_batchnorm``. Recompile afterwards.

    Returns:
        The names of the backbone layers with weights that are now trainable.
    """
    features = model.get_layer(BACKBONE_LAYER)
    starts = block_starts(features)
    first = 0 if blocks < 0 or blocks >= len(starts) else starts[len(starts) - blocks - 1]
    features.trainable = True
    names = []
    for i, layer in enumerate(features.layers):
        train = i >= first and (train_batchnorm or not isinstance(layer, keras.layers.BatchNormalization))
        layer.trainable = train
        if train and layer.weights:
            names.append(layer.name)
    return names
