"""Sentence-pair classification, the catalog's third task: two text columns, BERT's pair encoding."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console

from edgenas.cli import main
from edgenas.config import load_config
from edgenas.errors import EdgenasError
from tiny_project import FILLER, SPACE, THREE_CLASSES, write_tokenizer

WORDS = sorted({w for words in THREE_CLASSES.values() for w in words})


def write_pair_dataset(root: Path, rows: int = 160) -> Path:
    """Premise/hypothesis rows: "same" when both texts carry words of one class, else "different"."""
    rng = random.Random(0)
    classes = sorted(THREE_CLASSES)
    lines = ["premise,hypothesis,label"]
    for i in range(rows):
        first = classes[i % 3]
        same = i % 2 == 0
        second = first if same else classes[(i + 1 + rng.randrange(2)) % 3]
        texts = [" ".join(rng.choices(THREE_CLASSES[c], k=2) + rng.choices(FILLER, k=2)) for c in (first, second)]
        lines.append(f"{texts[0]},{texts[1]},{'same' if same else 'different'}")
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root / "pairs.csv"


def make_pair_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = write_pair_dataset(root)
    tokenizer = write_tokenizer(root, WORDS + FILLER)
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    config = {
        "task": {"kind": "pair", "dataset": str(data), "text_column": "premise", "text_pair_column": "hypothesis",
                 "tokenizer": str(tokenizer)},
        "space": str(root / "space.yaml"),
        "supernet": {"steps": 5, "batch_size": 8, "seq_len": 24, "teacher": None},
        "candidates": {"runtimes": {"onnxruntime": ["fp32"]}, "seq_lens": [24]},
        "measure": {"eval_examples": 10, "runs": 3, "warmup": 1, "parity_examples": 4, "calibration_examples": 4},
    }
    path = root / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_pair_data_encodes_both_texts_with_their_token_types(tmp_path: Path) -> None:
    from edgenas.search.study.runner import load_task_data

    config = load_config(make_pair_project(tmp_path))
    assert config.task.record.name == "pair" and config.task.record.pairs
    _, splits, tokenizer = load_task_data(config)
    assert splits.task == "pair" and splits.label_names == ["different", "same"]
    assert len(splits.train.pairs) == len(splits.train.texts)
    scored = splits.scored_set("dev", tokenizer, 24)
    assert scored["token_type_ids"].max() == 1 and scored["labels"].shape == (len(splits.dev),)
    first = tokenizer.decode(scored["input_ids"][0], skip_special_tokens=True)
    assert first == f"{splits.dev.texts[0]} {splits.dev.pairs[0]}"
    inputs, labels = splits.training_inputs(tokenizer, 24, limit=8)
    assert inputs["token_type_ids"].max() == 1 and len(labels) == 8


def test_pair_config_and_data_errors_are_one_line(tmp_path: Path) -> None:
    config = yaml.safe_load(make_pair_project(tmp_path).read_text())
    without = {**config, "task": {k: v for k, v in config["task"].items() if k != "text_pair_column"}}
    with pytest.raises(EdgenasError, match="text_pair_column"):
        load_config(_write(tmp_path / "a.yaml", without))
    stray = {**config, "task": {k: v for k, v in config["task"].items() if k != "kind"}}
    with pytest.raises(EdgenasError, match="kind: pair"):
        load_config(_write(tmp_path / "b.yaml", stray))
    missing = {**config, "task": {**config["task"], "text_pair_column": "claim"}}
    from edgenas.search.study.runner import load_task_data

    with pytest.raises(EdgenasError, match="missing column 'claim'"):
        load_task_data(load_config(_write(tmp_path / "c.yaml", missing)))


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def pair_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real pair search (2 trials) and the export of its first trial to every runtime."""
    from edgenas.search.results.export import ExportOptions, export_study
    from edgenas.search.study.runner import SearchOptions, run_search

    root = tmp_path_factory.mktemp("pair")
    config = load_config(make_pair_project(root / "project"))
    quiet = Console(file=open(os.devnull, "w"))
    storage = f"sqlite:///{root / 'study.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGENAS_CACHE_DIR", str(root / "cache"))
        run_search(config, SearchOptions(out_dir=root / "out", storage=storage, study_name="pair", n_trials=2,
                                         sampler="random", progress=False), quiet)
        options = ExportOptions(root / "export", trials="0", steps=2, batch_size=8, other_runtime=True, progress=False)
        return export_study("pair", storage, options, quiet)[0]


def test_a_pair_model_goes_through_search_export_every_runtime_and_predict(pair_export: Path, capsys) -> None:
    metrics = json.loads((pair_export / "metrics.json").read_text())
    assert metrics["task"] == "pair" and metrics["label_names"] == ["different", "same"]
    built = set(metrics["artifacts"])
    from edgenas.runtime.backends import BACKENDS

    assert built == {name for name, backend in BACKENDS.items() if backend.missing() is None} >= {"onnxruntime", "tflite"}
    for runtime, artifact in metrics["artifacts"].items():
        assert 0.0 <= artifact["measurement"]["dev_accuracy"] <= 1.0, runtime
        assert artifact["parity"]["argmax_agreement"] >= 0.75, runtime  # the runtimes read the token types too
    assert "sentence-pair classifier" in (pair_export / "README.md").read_text()

    from edgenas.runtime.predict import Predictor

    predictor = Predictor(pair_export)
    one = predictor.predict(["love great phone"], pairs=["happy good news"])[0]
    assert one.label in ("different", "same") and sum(one.scores.values()) == pytest.approx(1.0)
    swapped = predictor.predict(["happy good news"], pairs=["love great phone"])[0]
    assert swapped.scores != one.scores  # the two texts are read as a pair, not as one text
    for runtime in built:
        main(["predict", str(pair_export), "love great phone", "--pair", "happy good news", "--runtime", runtime,
              "--json"])
        assert json.loads(capsys.readouterr().out.splitlines()[-1])["label"] in ("different", "same")


def test_a_pair_model_needs_its_second_text(pair_export: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(pair_export), "love great phone"])
    assert exit_info.value.code == 2 and "--pair" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", str(pair_export), "a b", "c d", "--pair", "only one"])
    assert "one --pair per text" in capsys.readouterr().err


def test_compare_runs_a_pair_model_through_its_runtimes(pair_export: Path, monkeypatch) -> None:
    from edgenas.search.results.compare import CompareOptions, compare_model

    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(pair_export.parent.parent / "cache"))
    rows = compare_model(pair_export, CompareOptions(modes=["onnxruntime/fp32", "tflite/fp32"], runs=3, warmup=1))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all(r["torch_agreement"] == 1.0 and r["task"] == "pair" for r in rows)
    assert np.isclose(rows[0]["dev_accuracy"], rows[1]["dev_accuracy"])
