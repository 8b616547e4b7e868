"""DISTRIBUTION=data: keras.distribution.DataParallel over two devices that JAX simulates on the CPU
(XLA_FLAGS=--xla_force_host_platform_device_count=2) trains to the same predictions as one device
with the same seed; batches that do not split over the devices are padded, and the padding counts
in no loss and no prediction. The TensorFlow backend refuses the setting in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.registry import ConfigError
from train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
from pathlib import Path
from tests.train_helpers import context_dataset
from train.config import TrainConfig
from train.run import run_training

tmp = Path(sys.argv[1])
_, table = context_dataset(tmp / "cache", n_videos=6, n_val=2)
runs = {}
for kind in ("none", "data"):
    cfg = TrainConfig(cache_dir=str(tmp / "cache"), runs_dir=str(tmp / kind), task="expr", model="gru", seq_len=16,
                      stride=8, epochs=8, batch_size=10, layers=1, units=16, jit_compile="off", verbose=0,
                      distribution=kind)
    runs[kind] = str(run_training(cfg, table=table))
print(json.dumps(runs))
"""


@pytest.mark.slow
def test_two_simulated_devices_train_like_one(tmp_path):
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {k: Path(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    config = {k: json.loads((p / "config.json").read_text()) for k, p in runs.items()}
    assert config["none"]["data"]["devices"] == 1 and config["data"]["data"]["devices"] == 2
    assert config["data"]["distribution"] == "data"
    metrics = {k: json.loads((p / "metrics.json").read_text()) for k, p in runs.items()}
    # Same seed, same batches: the sums of the two halves of a batch differ from the whole only in rounding.
    assert metrics["data"]["f1_macro"] == pytest.approx(metrics["none"]["f1_macro"], abs=1e-6)
    assert metrics["data"]["best_epoch"] == metrics["none"]["best_epoch"]
    one, two = (pd.read_csv(p / "predictions_validation.csv") for p in (runs["none"], runs["data"]))
    probs = [c for c in one.columns if c.startswith("prob_")]
    assert len(one) == len(two) and np.allclose(one[probs], two[probs], atol=1e-4)
    assert (one["pred"] == two["pred"]).mean() > 0.999
    # It learned something, so two constants are not what is compared.
    assert metrics["none"]["accuracy"] > 0.4  # 4 classes, balanced: chance 0.25


def test_tensorflow_refuses_data_parallel():
    with pytest.raises(ConfigError, match="needs the JAX backend: set KERAS_BACKEND=jax"):
        TrainConfig(distribution="data").validate()
    with pytest.raises(ConfigError, match="--distribution must be none or data"):
        TrainConfig(distribution="model").validate()
