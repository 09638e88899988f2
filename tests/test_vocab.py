"""Vocabulary trimming: fewer embedding rows, a remapped tokenizer, the same predictions on kept tokens."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgenas.search.data.tokenizer import encode, load_tokenizer
from edgenas.search.data.vocab import VocabTrim
from tiny_project import write_tokenizer

WORDS = "the phone is good bad service awful great".split()
TRAIN_TEXTS = ["the phone is good", "service is bad", "great phone"]


@pytest.fixture
def trimmed(tmp_path: Path):
    """(full model, full tokenizer, trim, trimmed model dir) over a random tiny MobileBERT."""
    import torch
    from transformers import MobileBertConfig, MobileBertForSequenceClassification

    tokenizer = load_tokenizer(str(write_tokenizer(tmp_path, WORDS)))
    torch.manual_seed(0)
    config = MobileBertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, intra_bottleneck_size=16,
                              num_attention_heads=2, intermediate_size=32, embedding_size=16, num_labels=2)
    full = MobileBertForSequenceClassification(config).eval()
    trim = VocabTrim.from_texts(tokenizer, TRAIN_TEXTS)
    model = MobileBertForSequenceClassification(config).eval()
    model.load_state_dict(full.state_dict())
    trim.trim_model(model)
    out = tmp_path / "trimmed"
    model.save_pretrained(out)
    trim.save_tokenizer(tokenizer, out)
    return full, tokenizer, trim, out


def test_trim_keeps_used_and_special_tokens(trimmed) -> None:
    _, tokenizer, trim, _ = trimmed
    used = {tokenizer.convert_tokens_to_ids(w) for w in "the phone is good service bad great".split()}
    assert set(trim.kept.tolist()) == used | set(tokenizer.all_special_ids)
    assert trim.size < trim.full_size == len(tokenizer)
    assert trim.mapping()[tokenizer.convert_tokens_to_ids("awful")] == trim.mapping()[tokenizer.unk_token_id]


def test_kept_text_predicts_identically_and_other_tokens_become_unk(trimmed) -> None:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, MobileBertForSequenceClassification

    full, tokenizer, trim, out = trimmed
    small = MobileBertForSequenceClassification.from_pretrained(out).eval()
    assert small.config.vocab_size == trim.size
    loaded = AutoTokenizer.from_pretrained(out)
    texts = ["the phone is good", "great service"]
    with torch.no_grad():
        before = full(**{k: torch.from_numpy(v) for k, v in encode(tokenizer, texts, 8).items()}).logits
        after = small(**{k: torch.from_numpy(v) for k, v in encode(loaded, texts, 8).items()}).logits
    np.testing.assert_allclose(after.numpy(), before.numpy(), atol=1e-6)
    assert encode(loaded, texts, 8)["input_ids"].max() < trim.size
    unk = int(trim.mapping()[tokenizer.unk_token_id])
    assert loaded("awful phone", add_special_tokens=False)["input_ids"][0] == unk
    raw = Tokenizer.from_file(str(out / "tokenizer.json"))  # what `edgenas predict` reads
    assert raw.encode("the phone").ids == encode(loaded, ["the phone"], 4)["input_ids"][0].tolist()
    assert json.loads((out / "tokenizer_config.json").read_text())["edgenas_vocabulary"]["kept"] == trim.size


def test_trimmed_export_is_smaller_and_predicts(tiny_env, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from rich.console import Console

    from edgenas.cli import main
    from edgenas.search.results.export import ExportOptions, export_study

    metrics_full = json.loads((tiny_env.model_dir / "metrics.json").read_text())
    options = ExportOptions(tmp_path / "trimmed", trials=str(metrics_full["trial"]), steps=0, progress=False,
                            trim_vocab=True)
    model_dir = export_study(tiny_env.name, tiny_env.storage, options, Console(quiet=True))[0]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["vocabulary"]["kept"] < metrics["vocabulary"]["of"] == metrics_full["vocabulary"]["of"]
    runtime = metrics["runtime"]
    assert metrics["artifacts"][runtime]["size_mb"] < metrics_full["artifacts"][runtime]["size_mb"]
    assert "tokens |" in (model_dir / "README.md").read_text()
    capsys.readouterr()
    main(["predict", str(model_dir), "good phone !", "--json"])
    line = json.loads(capsys.readouterr().out)
    assert line["label"] in ("neg", "pos") and line["text"] == "good phone !"


def test_a_search_with_trim_vocab_builds_tflite_and_int4_with_the_trimmed_table(
        tmp_path: Path, isolated_cache: Path) -> None:
    """`trim_vocab: true` in a search: TFLite's artifact (built through its TensorFlow twin) and ONNX Runtime's int4
    weights (whose embedding is quantized in blocks) are built with the training text's tokens only, and each
    trial records that vocabulary for the predictor."""
    import io

    import optuna
    from optuna.trial import TrialState
    from rich.console import Console

    from edgenas.config import load_config
    from edgenas.search.study.predictor import VOCAB_ATTR
    from edgenas.search.study.runner import SearchOptions, run_search
    from edgenas.types import Candidate
    from tiny_project import make_tiny_project

    path = make_tiny_project(tmp_path / "project", runtimes={"onnxruntime": ["int4_weights"], "tflite": ["dynamic_int8"]})
    config = load_config(path).model_copy(update={"trim_vocab": True})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    options = SearchOptions(out_dir=tmp_path / "out", storage=storage, study_name="trimmed", n_trials=1,
                            sampler="random", progress=False, summary=False)
    run_search(config, options, Console(file=io.StringIO()))  # the max sub-config, in TFLite
    optuna.load_study(study_name="trimmed", storage=storage).enqueue_trial(
        {"runtime": "onnxruntime", "quantization_onnxruntime": "int4_weights"})
    study = run_search(config, replace(options, n_trials=2), Console(file=io.StringIO()))
    trials = [t for t in study.trials if t.state == TrialState.COMPLETE]
    built = sorted((c.runtime, c.quantization) for c in (Candidate.from_dict(t.user_attrs["candidate"]) for t in trials))
    assert built == [("onnxruntime", "int4_weights"), ("tflite", "dynamic_int8")]
    kept = {t.user_attrs[VOCAB_ATTR] for t in trials}
    assert len(kept) == 1 and 4 < kept.pop() < len(load_tokenizer(config.task.tokenizer))
