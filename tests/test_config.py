"""core.config: every entry point's flags come from its dataclass, each documented, defaults equal
the dataclass's; the layering: core imports no stage and train imports nothing from evaluate."""

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest

from core.config import add_fields, field_help
from evaluate.__main__ import build_parser as evaluate_parser
from evaluate.analyze import AnalyzeConfig
from extract.__main__ import build_parser as extract_parser
from extract.pipeline import ExtractConfig
from finetune.__main__ import build_parser as finetune_parser
from finetune.config import DistillConfig, FinetuneConfig
from finetune.joint import JointConfig
from train.__main__ import build_parser as train_parser
from train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [TrainConfig, ExtractConfig, FinetuneConfig, DistillConfig, JointConfig, AnalyzeConfig]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_is_documented(cls):
    helps = field_help(cls)
    undocumented = [f.name for f in dataclasses.fields(cls) if not helps.get(f.name)]
    assert not undocumented


@pytest.mark.parametrize(
    "argv, cls",
    [
        ([], TrainConfig),
        ([], ExtractConfig),
        (["train"], FinetuneConfig),
        (["distill"], DistillConfig),
        (["joint"], JointConfig),
        (["analyze"], AnalyzeConfig),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else " ".join(v),
)
def test_generated_defaults_equal_the_dataclass(argv, cls):
    parsers = {TrainConfig: train_parser, ExtractConfig: extract_parser, AnalyzeConfig: evaluate_parser}
    parser = parsers.get(cls, finetune_parser)()
    values = vars(parser.parse_args(argv))
    values.pop("command", None)
    assert cls(**values) == cls()


def test_flags_are_typed_from_the_fields():
    args = finetune_parser().parse_args(
        ["train", "--no-flip", "--input-size", "96,96,3", "--lr", "0.01", "--seed", "4"]
    )
    assert (args.flip, args.input_size, args.lr, args.seed) == (False, (96, 96, 3), 0.01, 4)
    args = extract_parser().parse_args(["--align", "--save-crops", "--detect-every", "10"])
    assert (args.align, args.save_crops, args.detect_every) == (True, True, 10)
    with pytest.raises(SystemExit):
        train_parser().parse_args(["--model", "tcn"])


def test_help_text_comes_from_the_docstring():
    text = train_parser().format_help()
    assert "--seq-len SEQ_LEN" in text and "frames per window" in text and "(default: 64)" in text
    helps = field_help(TrainConfig)
    assert helps["stride"].startswith("step between training windows")  # split out of the seq_len line
    assert helps["lr"] == helps["epochs"] == helps["batch_size"]


def test_add_fields_skips():
    parser = argparse.ArgumentParser()
    add_fields(parser, JointConfig, skip=("train_frames",))
    assert "train_frames" not in vars(parser.parse_args([]))


def _imports(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
    return found


def test_layering():
    assert not _imports("core") & {"extract", "train", "finetune", "evaluate", "bench"}
    assert "evaluate" not in _imports("train")
    assert not _imports("data_manifests") & {"core", "extract", "train", "finetune", "evaluate"}
