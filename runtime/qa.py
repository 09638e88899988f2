"""Extractive question answering (SQuAD v1.1): windows over long contexts, span decoding, the official metric.

Device-side on purpose: numpy, the stdlib and the `tokenizers` package only, so a
QA model can be tokenized, decoded and scored wherever the runtimes run.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .runners import INPUT_KEYS

if TYPE_CHECKING:  # imported where windows are made: scoring on a device needs numpy alone
    from tokenizers import Tokenizer

QA_SEQ_LEN = 384
#: tokens two consecutive windows of one context share (Hugging Face `stride` semantics)
QA_STRIDE = 128
MAX_ANSWER_TOKENS = 30
N_BEST = 20

#: offsets of tokens that are not context tokens (question, special, padding)
NO_OFFSET = -1


@dataclass
class Windows:
    """Tokenized (question, context window) pairs, several per question when the context is long."""

    input_ids: np.ndarray  # int64 [n, seq_len]
    attention_mask: np.ndarray  # int64 [n, seq_len]
    token_type_ids: np.ndarray  # int64 [n, seq_len]
    offsets: np.ndarray  # int32 [n, seq_len, 2]: character span in the context, -1 off the context
    example: np.ndarray  # int64 [n]: index of the question each window belongs to

    def inputs(self) -> dict[str, np.ndarray]:
        """The three model inputs, by name."""
        return {name: getattr(self, name) for name in INPUT_KEYS}

    def __len__(self) -> int:
        return len(self.example)

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    def context_mask(self) -> np.ndarray:
        """bool [n, seq_len]: True at context tokens, the only places an answer may start or end."""
        return self.offsets[..., 0] != NO_OFFSET

    def select(self, index: np.ndarray | Sequence[int] | slice | int) -> Windows:
        """A subset of the windows; `example` keeps pointing at the original questions."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]  # keep the window axis
        return Windows(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array by its field name (what `save` writes and `windows_of` reads)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def save(self, path: str | Path) -> None:
        """Write every array to one .npz file at exactly `path`."""
        # a file handle, not a name: np.savez would append ".npz" to a name without it
        with open(path, "wb") as handle:
            np.savez(handle, **self.arrays())

    @classmethod
    def load(cls, path: str | Path) -> Windows:
        """Read windows written by `save`."""
        with np.load(path, allow_pickle=False) as data:
            try:
                return windows_of({name: data[name] for name in data.files})
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None


def windows_of(arrays: dict[str, Any]) -> Windows:
    """The Windows held in a dict of arrays (a loaded .npz that has more besides)."""
    missing = [f.name for f in fields(Windows) if f.name not in arrays]
    if missing:
        raise ValueError(f"not a QA windows set (missing {', '.join(missing)})")
    return Windows(**{f.name: np.asarray(arrays[f.name]) for f in fields(Windows)})


@dataclass(frozen=True)
class Answer:
    """The predicted span: its text, character span in the context, probability and raw logit sum."""

    text: str
    start: int
    end: int
    score: float
    logit: float


NO_ANSWER = Answer("", 0, 0, 0.0, float("-inf"))


# ---------------------------------------------------------------- windows


def make_windows(
    tokenizer: Tokenizer,
    questions: list[str],
    contexts: list[str],
    seq_len: int = QA_SEQ_LEN,
    stride: int = QA_STRIDE,
    *,
    pad_token: str | None = None,
) -> Windows:
    """Question first, then the context, split into seq_len windows overlapping by `stride` tokens.

    `pad_token` defaults to the tokenizer's padding token, else [PAD] or <pad> when in its vocabulary.
    """
    if len(questions) != len(contexts):
        raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
    if stride < 0:
        raise ValueError(f"stride must be >= 0, got {stride}")
    copy = bare_copy(tokenizer)
    check_room(copy, questions, seq_len, stride)
    pad = _pad_token(tokenizer, pad_token)
    copy.enable_truncation(seq_len, stride=stride, strategy="only_second", direction="right")
    copy.enable_padding(direction="right", pad_id=pad[0], pad_token=pad[1], length=seq_len)

    encodings, example = [], []
    for index, encoding in enumerate(copy.encode_batch(list(zip(questions, contexts)))):
        windows = [encoding, *encoding.overflowing]  # overflowing: the later windows, already padded
        encodings.extend(windows)
        example.extend([index] * len(windows))
    return Windows(
        input_ids=np.array([e.ids for e in encodings], dtype=np.int64).reshape(-1, seq_len),
        attention_mask=np.array([e.attention_mask for e in encodings], dtype=np.int64).reshape(-1, seq_len),
        token_type_ids=np.array([e.type_ids for e in encodings], dtype=np.int64).reshape(-1, seq_len),
        offsets=_context_offsets(encodings, seq_len),
        example=np.array(example, dtype=np.int64),
    )


def bare_copy(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of the tokenizer without truncation or padding (both are state of a Tokenizer: they are
    set on a copy, never on the caller's)."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def check_room(tokenizer: Tokenizer, questions: list[str], seq_len: int, stride: int) -> None:
    """A one-line ValueError for a question that leaves no room for its context, or less than
    `stride` + 1 tokens of it: tokenizers would panic (a BaseException) there. `tokenizer`
    must be a bare_copy (padding would count as question tokens)."""
    specials = tokenizer.num_special_tokens_to_add(is_pair=True)
    lengths = [len(e.ids) for e in tokenizer.encode_batch(list(questions), add_special_tokens=False)]
    for index, length in enumerate(lengths):
        room = seq_len - specials - length
        if room <= 0:
            raise ValueError(
                f"question {index} is {length} tokens: with {specials} special tokens no context token "
                f"fits in seq_len {seq_len}"
            )
        if stride >= room:
            raise ValueError(
                f"stride {stride} must be less than the {room} context tokens that fit beside question "
                f"{index} ({length} tokens) in seq_len {seq_len}"
            )


def _pad_token(tokenizer: Tokenizer, pad_token: str | None) -> tuple[int, str]:
    """(id, token) to pad with: the explicit one, the tokenizer's configured one, or a usual name."""
    if pad_token is None and tokenizer.padding is not None:
        return tokenizer.padding["pad_id"], tokenizer.padding["pad_token"]
    for candidate in [pad_token] if pad_token is not None else ["[PAD]", "<pad>"]:
        pad_id = tokenizer.token_to_id(candidate)
        if pad_id is not None:
            return pad_id, candidate
    raise ValueError(f"the tokenizer has no padding token {pad_token or '[PAD] or <pad>'}: pass pad_token")


def _context_offsets(encodings: list, seq_len: int) -> np.ndarray:
    """int32 [n, seq_len, 2]: each context token's character span in the context, -1 elsewhere."""
    offsets = np.array([e.offsets for e in encodings], dtype=np.int32).reshape(-1, seq_len, 2)
    # sequence id 1 is the context; None marks special and padding tokens, 0 the question
    in_context = np.array([[s == 1 for s in e.sequence_ids] for e in encodings], dtype=bool).reshape(-1, seq_len)
    offsets[~in_context] = NO_OFFSET
    return offsets


# ---------------------------------------------------------------- decoding


def best_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    windows: Windows,
    contexts: list[str],
    n_best: int = N_BEST,
    max_answer_tokens: int = MAX_ANSWER_TOKENS,
) -> list[Answer]:
    """The best answer span of each question (index = windows.example) from the model's logits."""
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    expected = (len(windows), windows.seq_len)
    if start_logits.shape != expected or end_logits.shape != expected:
        raise ValueError(f"logits of shape {start_logits.shape} and {end_logits.shape}, expected {expected}")
    if len(windows) and windows.example.max() >= len(contexts):
        raise ValueError(f"windows name question {windows.example.max()} but only {len(contexts)} contexts given")
    window, start, end, logit = _candidates(start_logits, end_logits, windows.context_mask(), n_best, max_answer_tokens)
    answers = [NO_ANSWER] * len(contexts)
    if not len(logit):
        return answers
    question = windows.example[window]
    # best candidate of each question: sort by question, then logit descending; take each group's first
    order = np.lexsort((-logit, question))
    firsts = order[np.r_[True, question[order][1:] != question[order][:-1]]]
    # softmax over all candidates of a question; the best one's probability is 1 / sum(exp(logit - best))
    best_logit = np.full(len(contexts), -np.inf)
    best_logit[question[firsts]] = logit[firsts]
    mass = np.bincount(question, weights=np.exp(logit - best_logit[question]), minlength=len(contexts))
    for pick in firsts.tolist():
        q = int(question[pick])
        char_start = int(windows.offsets[window[pick], start[pick], 0])
        char_end = int(windows.offsets[window[pick], end[pick], 1])
        text = contexts[q][char_start:char_end]
        answers[q] = Answer(text, char_start, char_end, float(1.0 / mass[q]), float(logit[pick]))
    return answers


def _candidates(
    start_logits: np.ndarray, end_logits: np.ndarray, context: np.ndarray, n_best: int, max_answer_tokens: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every valid (window, start, end, logit sum) among each window's n_best starts x n_best ends."""
    n_windows, seq_len = context.shape
    k = max(0, min(n_best, seq_len))
    if n_windows == 0 or k == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, np.zeros(0)
    # answers live in the context only: everything else can never be picked
    starts = _top_k(np.where(context, start_logits, -np.inf), k)
    ends = _top_k(np.where(context, end_logits, -np.inf), k)
    rows = np.arange(n_windows)[:, None]
    start = np.broadcast_to(starts[:, :, None], (n_windows, k, k))
    end = np.broadcast_to(ends[:, None, :], (n_windows, k, k))
    length = end - start + 1
    # a window with fewer than k context tokens fills its top k with non-context positions: drop them
    logit = start_logits[rows, starts][:, :, None] + end_logits[rows, ends][:, None, :]
    valid = (
        (length >= 1)
        & (length <= max_answer_tokens)
        & context[rows, starts][:, :, None]
        & context[rows, ends][:, None, :]
        & np.isfinite(logit)  # a -inf logit has no probability to share in the softmax
    )
    window = np.broadcast_to(rows[:, :, None], (n_windows, k, k))
    return window[valid], start[valid], end[valid], logit[valid]


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values of each row (in no particular order)."""
    if k >= values.shape[1]:
        return np.broadcast_to(np.arange(values.shape[1]), values.shape).copy()
    return np.argpartition(-values, k - 1, axis=1)[:, :k]


# ---------------------------------------------------------------- the official SQuAD v1.1 metric


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace (evaluate-v1.1.py)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalized prediction equals any normalized gold answer, else 0.0."""
    return max(float(normalize_answer(prediction) == normalize_answer(gold)) for gold in _golds(golds))


def f1(prediction: str, golds: Sequence[str]) -> float:
    """The best token-overlap F1 of the prediction against any gold answer."""
    return max(_f1_one(prediction, gold) for gold in _golds(golds))


def _f1_one(prediction: str, gold: str) -> float:
    predicted = normalize_answer(prediction).split()
    expected = normalize_answer(gold).split()
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision = same / len(predicted)
    recall = same / len(expected)
    return 2 * precision * recall / (precision + recall)


def _golds(golds: Sequence[str]) -> Sequence[str]:
    # a bare string would be scored character by character: refuse it rather than return nonsense
    if isinstance(golds, str):
        raise TypeError("golds must be a list of answer strings, not one string")
    if not golds:
        raise ValueError("a question needs at least one gold answer")
    return golds


def squad_scores(predictions: list[str], golds: list[list[str]]) -> dict[str, float | int]:
    """Exact match and F1 in percent (0-100), averaged over questions, as evaluate-v1.1.py reports them."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} gold answer lists")
    if not predictions:
        raise ValueError("no predictions to score")
    n = len(predictions)
    return {
        "exact_match": 100.0 * sum(exact_match(p, g) for p, g in zip(predictions, golds)) / n,
        "f1": 100.0 * sum(f1(p, g) for p, g in zip(predictions, golds)) / n,
        "questions": n,
    }
