"""The masked losses of the tasks: targets travel as one float tensor ``y_true[..., C + 1]``.

The C label columns (one class id for class tasks) come first and, last, the loss mask (1: the
frame counts). Every loss here reads the mask from that column, so frames without a face,
unannotated frames and frames dropped by rebalancing add nothing to the loss or its gradient, on
any backend. They are registered under the package ``train`` (the name saved models hold).

Example::

    loss = MaskedCCCLoss()   # 1 - mean CCC over the masked frames of the batch
    loss(y_true, y_pred)     # y_true [B, T, 3]: valence, arousal, mask; y_pred [B, T, 2]
"""

from __future__ import annotations

import keras
from keras import ops

_EPS = 1e-7


def _split(y_true, y_pred):
    """Flattens leading axes: labels ``[M, C]``, mask ``[M]``, predictions ``[M, K]``."""
    width = y_true.shape[-1]
    y_true = ops.reshape(ops.cast(y_true, y_pred.dtype), (-1, width))
    return y_true[:, :-1], y_true[:, -1], ops.reshape(y_pred, (-1, y_pred.shape[-1]))


def _masked_mean(values, mask):
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


class _MaskedLoss(keras.losses.Loss):
    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name or type(self).__name__, reduction=reduction, dtype=dtype)


@keras.saving.register_keras_serializable(package="train")
class MaskedCCCLoss(_MaskedLoss):
    """``1 - mean_k CCC_k`` over the masked frames of the batch (one CCC per output column)."""

    def call(self, y_true, y_pred):
        labels, mask, pred = _split(y_true, y_pred)
        m = mask[:, None]
        n = ops.maximum(ops.sum(m), 1.0)
        mp = ops.sum(pred * m, axis=0) / n
        ml = ops.sum(labels * m, axis=0) / n
        dp, dl = (pred - mp) * m, (labels - ml) * m
        cov = ops.sum(dp * dl, axis=0) / n
        var_p = ops.sum(dp * dp, axis=0) / n
        var_l = ops.sum(dl * dl, axis=0) / n
        concordance = 2 * cov / (var_p + var_l + ops.square(mp - ml) + _EPS)
        return 1.0 - ops.mean(concordance)


@keras.saving.register_keras_serializable(package="train")
class MaskedPearsonLoss(_MaskedLoss):
    """``1 - mean_k Pearson_k`` over the masked rows of the batch."""

    def call(self, y_true, y_pred):
        labels, mask, pred = _split(y_true, y_pred)
        m = mask[:, None]
        n = ops.maximum(ops.sum(m), 1.0)
        dp = (pred - ops.sum(pred * m, axis=0) / n) * m
        dl = (labels - ops.sum(labels * m, axis=0) / n) * m
        r = ops.sum(dp * dl, axis=0) / ops.sqrt(ops.sum(dp * dp, axis=0) * ops.sum(dl * dl, axis=0) + _EPS)
        return 1.0 - ops.mean(r)


@keras.saving.register_keras_serializable(package="train")
class MaskedSparseCELoss(_MaskedLoss):
    """Categorical cross-entropy of softmax outputs, averaged over the masked frames."""

    def call(self, y_true, y_pred):
        labels, mask, pred = _split(y_true, y_pred)
        ce = ops.sparse_categorical_crossentropy(ops.cast(labels[:, 0], "int32"), pred)
        return _masked_mean(ce, mask)


@keras.saving.register_keras_serializable(package="train")
class MaskedBCELoss(_MaskedLoss):
    """Binary cross-entropy of sigmoid outputs, mean over outputs, averaged over masked frames."""

    def call(self, y_true, y_pred):
        labels, mask, pred = _split(y_true, y_pred)
        bce = ops.mean(ops.binary_crossentropy(labels, pred), axis=-1)
        return _masked_mean(bce, mask)


@keras.saving.register_keras_serializable(package="train")
class MaskedMSELoss(_MaskedLoss):
    """Squared error, mean over outputs, averaged over the masked rows."""

    def call(self, y_true, y_pred):
        labels, mask, pred = _split(y_true, y_pred)
        return _masked_mean(ops.mean(ops.square(pred - labels), axis=-1), mask)
