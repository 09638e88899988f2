"""`edgenas predict`: labels and scores through the exported artifact (numpy + tokenizers + runtime)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgenas.cli import main
from edgenas.runtime.predict import PredictError, Predictor, TextEncoder

TEXTS = ["the phone is good great", "awful hate not ok", "the car was fine"]


@pytest.mark.parametrize("runtime", ["onnxruntime", "tflite"])
def test_predict_matches_torch_probabilities(tiny_env, runtime: str) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = tiny_env.model_dir
    predictions = Predictor(model_dir, runtime=runtime).predict(TEXTS)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    batch = AutoTokenizer.from_pretrained(model_dir)(TEXTS, padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**batch).logits, -1).numpy()
    for p, row in zip(predictions, probs):
        assert set(p.scores) == {"neg", "pos"} and p.label == max(p.scores, key=p.scores.get)
        assert sum(p.scores.values()) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose([p.scores["neg"], p.scores["pos"]], row, atol=1e-4)


def test_encoder_matches_the_transformers_tokenizer(tiny_env) -> None:
    from transformers import AutoTokenizer

    ours = TextEncoder(tiny_env.model_dir, 16)(TEXTS + ["a " * 40])
    theirs = AutoTokenizer.from_pretrained(tiny_env.model_dir)(
        TEXTS + ["a " * 40], padding="max_length", truncation=True, max_length=16, return_tensors="np")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(ours[key], theirs[key])


@pytest.mark.parametrize("runtime", ["onnxruntime", "tflite"])
def test_a_dynamic_length_artifact_reads_each_batch_padded_to_its_longest_text(tiny_env, runtime, monkeypatch) -> None:
    predictor = Predictor(tiny_env.model_dir, runtime=runtime)
    assert predictor.runner.seq_len is None  # exported with a dynamic sequence axis
    texts = ["the phone is good great love it", "good", "the car was fine ok", "awful"]
    shapes, run = [], predictor.runner.predict_logits

    def spy(arrays, batch_size=32):
        shapes.append(arrays["input_ids"].shape)
        return run(arrays, batch_size)

    monkeypatch.setattr(predictor.runner, "predict_logits", spy)
    logits = predictor.logits(texts, batch_size=2)
    assert shapes == [(2, 3), (2, 9)]  # sorted by length: [CLS] + words + [SEP]
    padded = run(predictor.encode(texts), batch_size=4)
    assert predictor.encode(texts)["input_ids"].shape == (4, 16)
    np.testing.assert_allclose(logits, padded, atol=1e-4)  # the mask hides padding: same logits, same order


def test_predict_cli_texts_and_file(tiny_env, tmp_path, capsys) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("the phone is good\n\nawful\n")
    main(["predict", str(tiny_env.model_dir), "great love", "--file", str(texts), "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["great love", "the phone is good", "awful"]
    assert all(line["label"] in ("neg", "pos") and 0.5 <= line["score"] <= 1 for line in lines)


def test_predict_cli_plain_output_is_one_line_per_text(tiny_env, capsys) -> None:
    long_text = " ".join(["the phone is good and the service was great"] * 8)  # wider than any terminal
    main(["predict", str(tiny_env.model_dir), "great love", long_text, "awful\nhate"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    rows = [line.split("\t") for line in lines]
    assert [row[2] for row in rows] == ["great love", long_text, "awful hate"]
    assert all(len(row) == 3 and row[0] in ("neg", "pos") and 0.5 <= float(row[1]) <= 1 for row in rows)


def test_predict_cli_batch_independent_scores_one_text_at_a_time(tiny_env, capsys, monkeypatch) -> None:
    from edgenas.runtime.runners import Runner

    sizes: list[int] = []
    original = Runner.predict_logits

    def spy(self, arrays, batch_size=32):
        sizes.append(batch_size)
        return original(self, arrays, batch_size)

    monkeypatch.setattr(Runner, "predict_logits", spy)
    texts = ["great love", "awful", "the phone is good"]
    main(["predict", str(tiny_env.model_dir), *texts, "--json"])
    batched = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    main(["predict", str(tiny_env.model_dir), *texts, "--json", "--batch-independent"])
    alone = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sizes == [3, 1, 1, 1]  # a dynamic-length artifact: one batch of 3, then one text at a time
    assert [p["label"] for p in alone] == [p["label"] for p in batched]
    assert all(abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(alone, batched))  # fp32: same scores


def test_predict_errors(tiny_env, tmp_path, capsys) -> None:
    with pytest.raises(PredictError, match="model directory not found"):
        Predictor(tmp_path / "missing")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tmp_path), "text"])
    assert exit_info.value.code == 2 and "metrics.json" in capsys.readouterr().err


def test_predict_module_imports_no_torch_or_transformers() -> None:
    code = ("import sys, edgenas.runtime.predict; "
            "bad = [m for m in ('torch', 'transformers', 'tensorflow', 'optuna', 'edgenas.search', 'edgenas.compile') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
