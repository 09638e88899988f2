"""A complete but tiny edgenas project on disk: data, tokenizer, space, search config."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml
from transformers import BertTokenizerFast

from edgenas.runtime.measurement import Measurement
from edgenas.search.study.objectives import TrialResult

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FILLER = "the a phone car service store is it was ok today news".split()
THREE_CLASSES = {
    "positive": "love great good happy awesome fine".split(),
    "negative": "hate awful bad sad terrible broken".split(),
    "neutral": "phone car service store today news".split(),
}

SPACE = {
    "name": "tiny",
    "max": {
        "num_hidden_layers": 2, "hidden_size": 64, "intra_bottleneck_size": 32, "num_attention_heads": 2,
        "num_feedforward_networks": 1, "intermediate_size": 64, "embedding_size": 32,
    },
    "choices": {
        "num_hidden_layers": [1, 2], "hidden_size": [32, 64], "intra_bottleneck_size": [16, 32],
        "num_attention_heads": [1, 2], "num_feedforward_networks": [1], "intermediate_size": [32, 64],
        "embedding_size": [32],
    },
}


def write_tokenizer(root: Path, words: list[str]) -> Path:
    """A BERT WordPiece tokenizer over the given words, saved like a checkpoint's."""
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join([*SPECIAL_TOKENS, *sorted(set(words)), ".", "!", "#"]) + "\n")
    BertTokenizerFast(vocab=str(vocab), do_lower_case=True).save_pretrained(root / "tokenizer")
    return root / "tokenizer"


def write_dataset(root: Path, classes: dict[str, list[str]], rows: int = 150) -> Path:
    """A CSV whose labels follow the class words each text contains."""
    rng = random.Random(0)
    labels = sorted(classes)
    lines = ["text,label"]
    for i in range(rows):
        label = labels[i % len(labels)]
        words = rng.choices(classes[label], k=3) + rng.choices(FILLER, k=3)
        rng.shuffle(words)
        lines.append(f"{' '.join(words)},{label}")
    (root / "data.csv").write_text("\n".join(lines) + "\n")
    return root / "data.csv"


def make_tiny_project(
    root: Path,
    runtimes: dict[str, list[str]] | None = None,
    seq_lens: list[int] | None = None,
    classes: dict[str, list[str]] | None = None,
    supernet: dict | None = None,
    **measure: object,
) -> Path:
    """Write a dataset, a WordPiece tokenizer, a tiny space and a search config; return the config path."""
    root.mkdir(parents=True, exist_ok=True)
    classes = classes or THREE_CLASSES
    data = write_dataset(root, classes)
    tokenizer = write_tokenizer(root, [w for words in classes.values() for w in words] + FILLER)
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    config = {
        "task": {"dataset": str(data), "tokenizer": str(tokenizer)},
        "space": str(root / "space.yaml"),
        "supernet": supernet or {"steps": 6, "batch_size": 16, "seq_len": 16, "checkpoint_every": 3, "teacher": None},
        "candidates": {"runtimes": runtimes or {"onnxruntime": ["fp32", "dynamic_int8"]}, "seq_lens": seq_lens or [16]},
        "measure": {"eval_examples": 15, "runs": 5, "warmup": 1, "parity_examples": 4,
                    "calibration_examples": 4, **measure},
    }
    path = root / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


QA_THINGS = "car phone store service news".split()
QA_COLOURS = "red blue green black white".split()


def write_qa_dataset(root: Path, articles: int = 6) -> Path:
    """A SQuAD-format file: short contexts saying which colour each thing is, and questions asking it."""
    rng = random.Random(0)
    data = []
    for a in range(articles):
        paragraphs = []
        for _ in range(2):
            colours = {thing: rng.choice(QA_COLOURS) for thing in QA_THINGS}
            context = " ".join(f"the {thing} is {colour} ." for thing, colour in colours.items())
            qas = []
            for thing, colour in colours.items():
                start = context.index(f"the {thing} is ") + len(f"the {thing} is ")
                qas.append({"id": f"{a}-{len(paragraphs)}-{thing}", "question": f"what is the {thing} ?",
                            "answers": [{"text": colour, "answer_start": start}]})
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": f"article {a}", "paragraphs": paragraphs})
    path = root / "qa.json"
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


def make_tiny_qa_project(root: Path, runtimes: dict[str, list[str]] | None = None, **measure: object) -> Path:
    """make_tiny_project for extractive QA: a SQuAD-format file, its tokenizer, the tiny space; the config path."""
    root.mkdir(parents=True, exist_ok=True)
    data = write_qa_dataset(root)
    tokenizer = write_tokenizer(root, [*QA_THINGS, *QA_COLOURS, "the", "is", "what", "?"])
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    config = {
        "task": {"kind": "qa", "dataset": str(data), "tokenizer": str(tokenizer), "stride": 8},
        "space": str(root / "space.yaml"),
        "supernet": {"steps": 4, "batch_size": 8, "seq_len": 24, "checkpoint_every": 2, "teacher": None},
        # 24 tokens: each 25-token context takes three windows, so answers are decoded across windows
        "candidates": {"runtimes": runtimes or {"onnxruntime": ["fp32", "dynamic_int8"]}, "seq_lens": [24]},
        "measure": {"eval_examples": 12, "runs": 5, "warmup": 1, "parity_examples": 4,
                    "calibration_examples": 4, **measure},
    }
    path = root / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def trial_result(accuracy: float, median_ms: float, size_mb: float = 1.0, **figures: object) -> TrialResult:
    """A trial's result with the given figures (the rest plausible), as a search would record it."""
    measured = {"median_ms": median_ms, "p90_ms": median_ms * 1.1, "p99_ms": median_ms * 1.2, "mean_ms": median_ms,
                "std_ms": 0.0, "min_ms": median_ms, "cv": 0.0, "median_ci95": 0.01, "runs": 50, "warmup": 10,
                "noisy": False, "runtime": "onnxruntime", "threads": 1, "seq_len": 16, "batch": 1,
                "artifact": "model.onnx", "artifact_mb": size_mb, "load_ms": 1.0, "peak_rss_mb": 100.0,
                "device": "test", "accuracy": accuracy, "n_eval": 500}
    own = {k: figures.pop(k) for k in ("torch_accuracy",) if k in figures}
    measurement = Measurement.from_json({**measured, **figures})
    return TrialResult(measurement, torch_accuracy=float(own.get("torch_accuracy", accuracy)), size_mb=size_mb,
                       accuracy_ci95=(accuracy, accuracy))
