"""Knowledge distillation (Hinton et al. 2015): a small student learns a fine-tuned teacher's
softened outputs, weighted with the hard labels, and optionally its embedding.

Each training batch is read and augmented once; the teacher sees it at its own input size and the
student at its (smaller) one, so both judge the same pixels. The teacher's probabilities travel in
the targets, ``[B, K + C + 1]`` (teacher outputs, labels, mask), and :class:`DistillationLoss`
recovers its logits up to a constant (``log p``), which the temperature softmax ignores.

The run folder has the layout of a fine-tuning run (``model.keras`` is a stage-one backbone:
``make extract BACKBONE=file:<run>/model.keras``) and its ``metrics.json`` puts the student's
frame-level metric and images per second beside the teacher's.

Example::

    run_dir = run_distill(DistillConfig(teacher="runs/<fine-tuning run>", student="mobilenetv2",
                                        student_input_size=(64, 64, 3)))
    json.loads((run_dir / "metrics.json").read_text())["teacher"]["img_per_s"]
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import threading
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

from core.run_folder import RunFolder
from core.tasks import TASKS
from finetune.config import DistillConfig
from finetune.data import Augment, CropDataset, predict_index, predictions_table
from finetune.model import EMBEDDING_LAYER, build_model, set_trainable
from finetune.run import FrameScorer, finish_run, load_indexes, open_run

log = logging.getLogger(__name__)
_EPS = 1e-7


@keras.saving.register_keras_serializable(package="finetune")
class DistillationLoss(keras.losses.Loss):
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard``, mean over masked rows.

    ``kind="softmax"`` (one class per frame): ``x_T = softmax(log p / T)``, hard = cross-entropy of
    the class id. ``kind="sigmoid"`` (independent labels): ``x_T = sigmoid(logit(p) / T)`` per
    output, KL of the two Bernoulli distributions and binary cross-entropy, both averaged over the
    outputs. ``T^2`` keeps the soft gradients' scale independent of ``T`` (Hinton et al.).

    Args:
        outputs: K, the number of model outputs. kind: ``softmax`` or ``sigmoid``.
        temperature: T. alpha: weight of the soft term.

    ``y_true`` is ``[B, K + C + 1]``: teacher probabilities, labels (C = 1 for class ids), mask.
    """

    def __init__(
        self,
        outputs: int,
        kind: str,
        temperature: float,
        alpha: float,
        name="distillation",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if kind not in ("softmax", "sigmoid"):
            raise ValueError(f"DistillationLoss kind must be softmax or sigmoid, got {kind!r}")
        self.outputs, self.kind, self.temperature, self.alpha = int(outputs), kind, float(temperature), float(alpha)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        k, t = self.outputs, self.temperature
        teacher, labels, mask = y_true[:, :k], y_true[:, k:-1], y_true[:, -1]
        p_t = ops.clip(teacher, _EPS, 1 - _EPS)
        p_s = ops.clip(y_pred, _EPS, 1 - _EPS)
        if self.kind == "softmax":
            log_qt = ops.log_softmax(ops.log(p_t) / t, axis=-1)
            log_qs = ops.log_softmax(ops.log(p_s) / t, axis=-1)
            soft = ops.sum(ops.exp(log_qt) * (log_qt - log_qs), axis=-1)
            onehot = ops.one_hot(ops.cast(labels[:, 0], "int32"), k, dtype=p_s.dtype)
            hard = -ops.sum(onehot * ops.log(p_s), axis=-1)
        else:
            q_t = ops.clip(ops.sigmoid((ops.log(p_t) - ops.log(1 - p_t)) / t), _EPS, 1 - _EPS)
            q_s = ops.clip(ops.sigmoid((ops.log(p_s) - ops.log(1 - p_s)) / t), _EPS, 1 - _EPS)
            soft = ops.mean(q_t * ops.log(q_t / q_s) + (1 - q_t) * ops.log((1 - q_t) / (1 - q_s)), axis=-1)
            hard = -ops.mean(labels * ops.log(p_s) + (1 - labels) * ops.log(1 - p_s), axis=-1)
        per_row = self.alpha * t * t * soft + (1 - self.alpha) * hard
        return ops.sum(per_row * mask) / ops.maximum(ops.sum(mask), 1.0)

    def get_config(self):
        return {
            **super().get_config(),
            "outputs": self.outputs,
            "kind": self.kind,
            "temperature": self.temperature,
            "alpha": self.alpha,
        }


class DistillDataset(CropDataset):
    """Batches ``(student pixels, targets)``; targets carry the teacher's outputs on the same crops.

    Args:
        teacher: model mapping teacher pixels to ``[embedding, outputs]``. teacher_size: its input.
        with_embedding: also yield the teacher's embedding as the ``embedding_projection`` target.
        Other args: as :class:`CropDataset` (``input_size`` is the student's).
    """

    def __init__(self, index, input_size, batch_size, teacher, teacher_size, with_embedding=False, **kwargs):
        super().__init__(index, input_size, batch_size, **kwargs)
        self.teacher, self.teacher_size, self.with_embedding = teacher, tuple(teacher_size), with_embedding
        self._lock = threading.Lock()  # reader threads share one teacher

    def __getitem__(self, batch: int):
        x_s, x_t = self.images(batch, (self.input_size, self.teacher_size))
        with self._lock:
            emb_t, p_t = (np.asarray(v, np.float32) for v in self.teacher.predict_on_batch(x_t.astype(np.float32)))
        y = np.concatenate([p_t, self._targets[self.picks(batch)]], axis=1)
        if self.with_embedding:
            return x_s.astype(np.float32), {"head": y, "embedding_projection": emb_t}
        return x_s.astype(np.float32), y


class SaveBest(keras.callbacks.Callback):
    """Saves ``model`` (not the training graph) whenever ``monitor`` reaches a new maximum."""

    def __init__(self, model: keras.Model, path: Path, monitor: str):
        super().__init__()
        self.target, self.path, self.monitor, self.best = model, path, monitor, -np.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and np.isfinite(value) and value > self.best:
            self.best = float(value)
            self.target.save(self.path)


def teacher_dir(cfg: DistillConfig) -> Path:
    """The teacher's run folder: ``cfg.teacher`` as a path, or its name under ``cfg.runs_dir``."""
    if not cfg.teacher:
        cfg.validate()  # names the missing --teacher
    for path in (Path(cfg.teacher), Path(cfg.runs_dir) / cfg.teacher):
        if RunFolder(path).model_path.is_file():
            return path
    raise ValueError(
        f"--teacher {cfg.teacher}: no model.keras there nor under {cfg.runs_dir}/; pass a fine-tuning "
        f"run folder (make finetune writes runs/<run id>/model.keras)"
    )


def images_per_second(model_file: Path, n: int, batch_size: int = 256) -> float:
    """Throughput of a saved model as stage one runs it (``file:`` backbone, uint8 in, embedding out)."""
    from extract.backbones import FILE_PREFIX, load_backbone

    backbone = load_backbone(FILE_PREFIX + str(model_file), batch_size=batch_size)
    images = np.random.default_rng(0).integers(0, 256, (n,) + tuple(backbone.input_size), dtype=np.uint8)
    backbone.embed(images[:batch_size])  # compile/warm-up outside the timing
    start = time.perf_counter()
    backbone.embed(images)
    return n / (time.perf_counter() - start)


def run_distill(cfg: DistillConfig) -> Path:
    """Trains the student and writes its run folder; returns it."""
    teacher_path = teacher_dir(cfg)
    teacher_run = RunFolder(teacher_path)
    teacher_cfg = teacher_run.read_config()
    teacher_crops = teacher_cfg.get("data", {}).get("crops", "cropped_aligned")  # the crops file it read, if any
    cfg = dataclasses.replace(
        cfg,
        dataset=cfg.dataset or teacher_cfg["dataset"],
        data_root=cfg.data_root or teacher_cfg["data_root"],
        task=cfg.task or teacher_cfg["task"],
        student_input_size=tuple(int(v) for v in cfg.student_input_size),
        crops=cfg.crops or ("" if teacher_crops == "cropped_aligned" else teacher_crops),
    ).validate()
    task = TASKS[cfg.task]
    monitor = f"val_{task.monitor}"
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    teacher = keras.saving.load_model(teacher_run.model_path, safe_mode=True, compile=False)
    layer = teacher_run.file("embedding_layer.txt").read_text().strip()
    teacher_outputs = keras.Model(teacher.inputs, [teacher.get_layer(layer).output, teacher.output])
    teacher_size = tuple(teacher.input_shape[1:])
    if teacher.output_shape[-1] != task.outputs:
        raise ValueError(
            f"{teacher_path}/model.keras has {teacher.output_shape[-1]} outputs; task '{task.name}' "
            f"has {task.outputs}: distil with the teacher's own task"
        )
    train, val, dist, info = load_indexes(cfg, task, None)

    student = build_model(
        cfg.student,
        cfg.student_input_size,
        cfg.init,
        cfg.student_weights,
        task,
        cfg.embedding_dim,
        cfg.dropout,
        cfg.seed,
    )
    set_trainable(student, -1, train_batchnorm=True)
    input_size = tuple(student.input_shape[1:])
    kind = "softmax" if task.labels.kind == "class" else "sigmoid"
    loss = DistillationLoss(task.outputs, kind, cfg.temperature, cfg.alpha)
    with_embedding = cfg.embedding_weight > 0
    if with_embedding:
        width = int(teacher.get_layer(layer).output.shape[-1])
        projection = keras.layers.Dense(width, name="embedding_projection")(student.get_layer(EMBEDDING_LAYER).output)
        trainer = keras.Model(student.inputs, {"head": student.output, "embedding_projection": projection})
        trainer.compile(
            optimizer=keras.optimizers.Adam(cfg.lr),
            loss={"head": loss, "embedding_projection": keras.losses.MeanSquaredError()},
            loss_weights={"head": 1.0, "embedding_projection": cfg.embedding_weight},
            jit_compile=cfg.jit_compile,
        )
    else:
        trainer = student
        trainer.compile(optimizer=keras.optimizers.Adam(cfg.lr), loss=loss, jit_compile=cfg.jit_compile)
    dataset = DistillDataset(
        train,
        input_size,
        cfg.batch_size,
        teacher_outputs,
        teacher_size,
        with_embedding,
        augment=Augment.of(cfg),
        seed=cfg.seed,
        frames_per_epoch=cfg.train_frames,
        workers=cfg.workers,
    )

    folder = open_run(
        cfg,
        f"distill-{cfg.student}-from-{teacher_path.name}",
        student,
        input_size,
        info,
        dist,
        model_name=f"distill:{cfg.student}",
        backbone=cfg.student,
        teacher_run=str(teacher_path),
        teacher_input_size=list(teacher_size),
        teacher_parameters=int(teacher.count_params()),
    )
    scorer = FrameScorer(
        val, input_size, cfg.batch_size, task, task.make_loss(cfg.train_config()), model=student, workers=cfg.workers
    )
    callbacks = [
        scorer,
        SaveBest(student, folder.model_path, monitor),
        keras.callbacks.CSVLogger(str(folder.history_path)),
    ]
    trainer.fit(dataset, epochs=cfg.epochs, callbacks=callbacks, verbose=cfg.verbose)

    def against_teacher(best) -> dict:
        teacher_pred = predict_index(teacher, val, teacher_size, cfg.batch_size, cfg.workers)
        teacher_metrics = task.metrics(predictions_table(val, teacher_pred))
        return {
            "img_per_s": images_per_second(folder.model_path, cfg.bench_images),
            "parameters": int(student.count_params()),
            "teacher": {
                "run": str(teacher_path),
                **{k: teacher_metrics[k] for k in (task.monitor, "accuracy") if k in teacher_metrics},
                "img_per_s": images_per_second(teacher_run.model_path, cfg.bench_images),
                "parameters": int(teacher.count_params()),
                "input_size": list(teacher_size),
            },
            "bench": f"{keras.backend.backend()} backend, {platform.machine()} host with {os.cpu_count()} cores, "
            f"batch 256, {cfg.bench_images} images",
        }

    metrics = finish_run(folder, student, scorer, monitor, extra=against_teacher)
    log.info(
        "student %s: %s %.4f at %.0f img/s; teacher: %.4f at %.0f img/s",
        cfg.student,
        task.monitor,
        metrics[task.monitor],
        metrics["img_per_s"],
        metrics["teacher"][task.monitor],
        metrics["teacher"]["img_per_s"],
    )
    return folder.path
