"""``DISTRIBUTION=data``: data-parallel training with ``keras.distribution.DataParallel``.

Every local accelerator (or, on a CPU, every device ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
simulates) holds a copy of the weights; each batch is split over them and the gradients are averaged.
Across hosts, ``keras.distribution.initialize`` runs first when its ``KERAS_DISTRIBUTION_JOB_ADDRESSES``,
``KERAS_DISTRIBUTION_NUM_PROCESSES`` and ``KERAS_DISTRIBUTION_PROCESS_ID`` variables are set.
Keras distributes on the JAX backend only.

Example::

    with data_parallel("data", batch_size=32) as devices:
        model = build_model(...)          # built under the distribution: its variables are replicated
        model.fit(...)
"""

from __future__ import annotations

import contextlib
import logging
import os

import keras

from core.registry import ConfigError

log = logging.getLogger(__name__)

MULTI_HOST_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES")


@contextlib.contextmanager
def data_parallel(kind: str, batch_size: int):
    """Sets the distribution for the block (``kind`` ``none``: nothing); yields the devices used."""
    if kind == "none":
        yield []
        return
    if all(os.environ.get(v) for v in MULTI_HOST_VARIABLES):
        keras.distribution.initialize()
    devices = keras.distribution.list_devices()
    if batch_size % len(devices):
        raise ConfigError(
            f"--batch-size {batch_size} does not split over {len(devices)} devices; use a multiple of {len(devices)}"
        )
    log.info("data parallel over %d devices: %s", len(devices), ", ".join(devices))
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        yield devices
    finally:
        keras.distribution.set_distribution(previous)
