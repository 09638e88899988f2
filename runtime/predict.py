"""Classify texts, or answer questions from a context, with an exported model directory
through its .tflite/.onnx/.pte artifact.

Device-side on purpose: numpy, the `tokenizers` package (tokenizer.json) and the
runtime libraries only — no torch, transformers or edgenas.search — so it runs
wherever the runtimes run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backends import BACKENDS, load_runner
from .qa import QA_STRIDE, Answer, best_spans, make_windows
from .runners import DEFAULT_SEQ_LEN, Runner, RuntimeLoadError
from .tasks import CLASSIFICATION, get_task

METRICS_FILE = "metrics.json"
#: each backend's artifact file inside an exported model directory
ARTIFACT_FILES = {name: backend.artifact_file for name, backend in BACKENDS.items()}


class PredictError(ValueError):
    """The model directory or the input cannot be used for prediction."""


@dataclass
class Prediction:
    """One text's (or text pair's) label, its probability, and the probability of every label."""

    text: str
    label: str
    score: float
    scores: dict[str, float]
    pair: str | None = None  # a sentence-pair model's second text


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PredictError(f"{path.parent}: no {path.name} (not an `edgenas export` model directory)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PredictError(f"{path}: unreadable JSON ({exc})") from None


def label_names(model_dir: Path) -> list[str]:
    """Label names in logit order, from the transformers config's id2label."""
    id2label = _read_json(model_dir / "config.json").get("id2label") or {}
    return [str(id2label[key]) for key in sorted(id2label, key=int)]


def choose_artifact(model_dir: Path, runtime: str | None = None) -> Path:
    """The artifact of `runtime`, else the one the search picked, else any present."""
    if runtime is not None and runtime not in ARTIFACT_FILES:
        raise PredictError(f"unknown runtime {runtime!r}; choose one of {', '.join(ARTIFACT_FILES)}")
    info = _read_json(model_dir / METRICS_FILE)
    order = [runtime] if runtime else [info.get("runtime"), *ARTIFACT_FILES]
    for name in order:
        if name in ARTIFACT_FILES and (model_dir / ARTIFACT_FILES[name]).is_file():
            return model_dir / ARTIFACT_FILES[name]
    wanted = ARTIFACT_FILES[runtime] if runtime else " or ".join(ARTIFACT_FILES.values())
    raise PredictError(f"{model_dir}: no {wanted} artifact")


class TextEncoder:
    """tokenizer.json as the model saw it in training: [CLS] ... [SEP], truncated to seq_len, padded to
    seq_len or, for an artifact of dynamic length, only to the longest text of the batch."""

    def __init__(self, model_dir: Path, seq_len: int) -> None:
        from tokenizers import Tokenizer

        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise PredictError(f"{model_dir}: no tokenizer.json")
        self.tokenizer = Tokenizer.from_file(str(path))
        config_path = model_dir / "tokenizer_config.json"
        pad_token = _read_json(config_path).get("pad_token", "[PAD]") if config_path.is_file() else "[PAD]"
        self.pad_token = pad_token = pad_token["content"] if isinstance(pad_token, dict) else str(pad_token)
        pad_id = self.tokenizer.token_to_id(pad_token)
        self.pad_id = 0 if pad_id is None else pad_id
        self.seq_len = seq_len
        self.tokenizer.enable_truncation(max_length=seq_len)
        self.tokenizer.no_padding()  # padded per batch by pad()

    def __call__(self, texts: list[str], pairs: list[str] | None = None) -> dict[str, np.ndarray]:
        """The texts encoded, or the text pairs ([CLS] a [SEP] b [SEP], token type 1 for b), padded to seq_len."""
        return self.pad(self.encodings(texts, pairs), self.seq_len)

    def encodings(self, texts: list[str], pairs: list[str] | None = None) -> list[Any]:
        """Each text's (or pair's) truncated, unpadded `tokenizers.Encoding`."""
        return self.tokenizer.encode_batch(list(texts) if pairs is None else list(zip(texts, pairs)))

    def pad(self, encodings: list[Any], length: int | None = None) -> dict[str, np.ndarray]:
        """Model inputs of `encodings`, padded to `length` (default: the longest of them)."""
        length = length or max(len(e.ids) for e in encodings)
        out = {"input_ids": np.full((len(encodings), length), self.pad_id, dtype=np.int64),
               "attention_mask": np.zeros((len(encodings), length), dtype=np.int64),
               "token_type_ids": np.zeros((len(encodings), length), dtype=np.int64)}
        for row, e in enumerate(encodings):
            n = len(e.ids)
            out["input_ids"][row, :n], out["attention_mask"][row, :n], out["token_type_ids"][row, :n] = (
                e.ids, e.attention_mask, e.type_ids)
        return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class Predictor:
    """An exported model directory loaded through one runtime: a classifier's `predict`, a QA model's `answer`."""

    def __init__(self, model_dir: str | Path, runtime: str | None = None, threads: int = 1) -> None:
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise PredictError(f"{self.model_dir}: model directory not found")
        self.artifact = choose_artifact(self.model_dir, runtime)
        info = _read_json(self.model_dir / METRICS_FILE)
        self.seq_len = int(info.get("seq_len", DEFAULT_SEQ_LEN))
        self.stride = int(info.get("stride", QA_STRIDE))
        self.labels = label_names(self.model_dir)
        try:
            self.task = get_task(str(info.get("task", CLASSIFICATION.name)))
            self.runner: Runner = load_runner(self.artifact, threads=threads)
        except RuntimeLoadError as exc:
            raise PredictError(str(exc)) from None
        self.encode = TextEncoder(self.model_dir, self.seq_len)

    @property
    def runtime(self) -> str:
        return self.runner.runtime

    def predict(self, texts: list[str], batch_size: int = 32, pairs: list[str] | None = None) -> list[Prediction]:
        """Label and probabilities of each text (a sentence-pair model: of each text with its pair).

        batch_size 1 makes each text's scores independent of the others: ONNX Runtime's
        dynamic int8 quantizes activations with ranges taken over the whole batch.
        """
        if self.task.spans:
            raise PredictError(f"{self.model_dir} answers questions: give --question and --context")
        if self.task.pairs and pairs is None:
            raise PredictError(f"{self.model_dir} classifies sentence pairs: give each text's second text (--pair)")
        if not self.task.pairs and pairs is not None:
            raise PredictError(f"{self.model_dir} classifies single texts: --pair is for sentence-pair models")
        if pairs is not None and len(pairs) != len(texts):
            raise PredictError(f"give one --pair per text ({len(texts)} texts, {len(pairs)} pairs)")
        if not texts:
            return []
        probs = softmax(self.logits(texts, pairs, batch_size))
        if self.labels and probs.shape[1] != len(self.labels):
            raise PredictError(f"the artifact gives {probs.shape[1]} logits but config.json names {len(self.labels)} labels")
        names = self.labels or [str(i) for i in range(probs.shape[1])]
        out = []
        for i, (text, row) in enumerate(zip(texts, probs)):
            best = int(row.argmax())
            out.append(Prediction(text, names[best], float(row[best]), {n: float(p) for n, p in zip(names, row)},
                                  None if pairs is None else pairs[i]))
        return out

    def logits(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32) -> np.ndarray:
        """The texts' logits, in their order. An artifact compiled for one length reads every text padded
        to it; one of dynamic length reads the texts sorted by length, each batch padded only to its
        longest text (a tweet is half the compiled 64 tokens on average, so half the compute)."""
        if self.runner.seq_len is not None:
            return self.runner.predict_logits(self.encode(texts, pairs), batch_size=batch_size)
        encodings = self.encode.encodings(texts, pairs)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        logits = [self.runner.predict_logits(self.encode.pad([encodings[i] for i in rows]), batch_size=len(rows))
                  for rows in batches]
        out = np.empty((len(encodings), logits[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(logits)
        return out

    def answer(self, question: str, context: str) -> Answer:
        """The best answer span of `context` to `question`, with its probability among the candidate spans.

        A context longer than the compiled sequence is read in overlapping windows, one model run each,
        one window at a time (batch 1), as the measurements were."""
        if not self.task.spans:
            raise PredictError(f"{self.model_dir} is a text classifier: give texts, not --question/--context")
        if not question.strip() or not context.strip():
            raise PredictError("give a non-empty --question and --context")
        try:
            windows = make_windows(self.encode.tokenizer, [question], [context], self.seq_len, self.stride,
                                   pad_token=self.encode.pad_token)
        except ValueError as exc:
            raise PredictError(str(exc)) from None
        logits = self.runner.predict_logits(windows.inputs(), batch_size=1)
        return best_spans(logits[:, 0], logits[:, 1], windows, [context])[0]
