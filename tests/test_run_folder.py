"""core.run_folder: names, creation without reuse, the config at the start, the finish with the best
model and metrics, and readers that refuse what is not a run folder."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from core import run_folder as rf
from core.run_folder import RunFolder, RunFolderError
from train.config import TrainConfig


def _model():
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="out")])


def test_create_never_reuses_a_folder(tmp_path):
    first = RunFolder.create(tmp_path, "run")
    second = RunFolder.create(tmp_path, "run")
    assert first.path.name == "run" and second.path.name == "run-2"


def test_start_writes_the_resolved_config(tmp_path):
    folder = RunFolder.create(tmp_path, "r")
    cfg = TrainConfig(task="va").resolved()
    folder.start(cfg, cache="c.h5")
    config = json.loads((tmp_path / "r" / rf.CONFIG).read_text())
    assert config["task"] == "va" and config["data_root"] == "data/synthetic" and config["cache"] == "c.h5"
    assert config["keras_version"] == keras.__version__ and config["backend"] == keras.backend.backend()
    assert TrainConfig(**{k: config[k] for k in TrainConfig.__dataclass_fields__}) == cfg


def test_finish_scores_the_best_model_and_writes_metrics(tmp_path):
    folder = RunFolder.create(tmp_path, "r")
    pd.DataFrame({"epoch": [0, 1, 2], "val_m": [0.1, 0.7, 0.3]}).to_csv(folder.history_path, index=False)
    model = _model()
    seen = {}

    def score(best):
        seen["weights"] = [w.shape for w in best.get_weights()]
        return {"m": 0.7, "undefined": float("nan")}, pd.DataFrame({"a": [1, 2]})

    metrics = folder.finish(model, "val_m", score, extra=lambda best: {"extra": 1})
    assert folder.model_path.is_file()  # never checkpointed: the last model is saved
    assert seen["weights"] == [(2, 1), (1,)]
    written = json.loads(folder.metrics_path.read_text())
    assert written == {"m": 0.7, "undefined": None, "epochs_run": 3, "best_epoch": 1, "extra": 1}
    assert metrics["best_epoch"] == 1 and np.isnan(metrics["undefined"])
    assert pd.read_csv(folder.predictions_path)["a"].tolist() == [1, 2]


def test_best_epoch_never_finite(tmp_path):
    folder = RunFolder(tmp_path)
    pd.DataFrame({"epoch": [0, 1], "val_m": [float("nan"), float("nan")]}).to_csv(folder.history_path, index=False)
    assert folder.best_epoch("val_m") == {"epochs_run": 2, "best_epoch": -1}


def test_readers_refuse_json_that_is_not_an_object(tmp_path):
    (tmp_path / rf.METRICS).write_text("[1, 2]")
    with pytest.raises(RunFolderError, match=r"metrics\.json: holds a JSON list, not an object"):
        RunFolder(tmp_path).read_metrics()


def test_resolve_lists_the_runs(tmp_path):
    RunFolder.create(tmp_path, "a").config_path.write_text("{}")
    assert RunFolder.resolve("a", tmp_path).path == tmp_path / "a"
    assert RunFolder.resolve(str(tmp_path / "a"), "elsewhere").path == tmp_path / "a"
    with pytest.raises(FileNotFoundError, match="1 runs there, e.g. a"):
        RunFolder.resolve("b", tmp_path)
