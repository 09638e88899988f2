"""A complete but tiny edgenas project on disk: data, tokenizer, space, search config."""

from __future__ import annotations

import random
from pathlib import Path

import yaml
from transformers import BertTokenizerFast

WORDS = {
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


def make_tiny_project(root: Path, runtimes: dict[str, list[str]] | None = None, seq_lens: list[int] | None = None,
                      **measure: object) -> Path:
    """Write a 3-class dataset, a WordPiece tokenizer, a tiny space and a config; return the config path."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    lines = ["text,label"]
    for i in range(150):
        label = ["positive", "negative", "neutral"][i % 3]
        words = rng.choices(WORDS[label], k=4) + rng.choices(WORDS["neutral"], k=2)
        rng.shuffle(words)
        lines.append(f"{' '.join(words)},{label}")
    (root / "data.csv").write_text("\n".join(lines) + "\n")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for ws in WORDS.values() for w in ws})]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(root / "vocab.txt"), do_lower_case=True).save_pretrained(root / "tokenizer")
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    config = {
        "task": {"dataset": str(root / "data.csv"), "tokenizer": str(root / "tokenizer")},
        "space": str(root / "space.yaml"),
        "supernet": {"max_steps": 6, "batch_size": 16, "seq_len": 16, "checkpoint_every": 3},
        "candidates": {"runtimes": runtimes or {"onnxruntime": ["fp32", "dynamic_int8"]}, "seq_lens": seq_lens or [16]},
        "measure": {"eval_examples": 15, "runs": 5, "warmup": 1, "parity_examples": 4,
                    "calibration_examples": 4, **measure},
    }
    path = root / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
