"""Extractive QA: the official SQuAD v1.1 metric, windows over long contexts, span decoding, SQuAD-format files."""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from edgenas.runtime.qa import (
    Answer,
    Windows,
    best_spans,
    exact_match,
    f1,
    make_windows,
    normalize_answer,
    squad_scores,
)
from edgenas.search.data.datasets import DataError
from edgenas.search.data.qa import QAExample, QASplits, answer_positions, load_qa, load_squad, qa_windows


@pytest.fixture(scope="module")
def hf_tokenizer():
    """The packaged BERT uncased tokenizer (a transformers fast tokenizer)."""
    from edgenas.search.data.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="module")
def backend(hf_tokenizer) -> Tokenizer:
    """The same tokenizer as the Rust `tokenizers.Tokenizer`."""
    return hf_tokenizer.backend_tokenizer


# mixed case, punctuation, numbers that split into word pieces; ASCII so offsets compare after lowercasing
LONG_CONTEXT = " ".join(
    f"Sentence {i}: the quick-brown Fox (no. {i}) jumped over {i * 7919} lazy dogs, didn't it?" for i in range(40)
)


def _plain(text: str) -> str:
    """What the uncased BERT normalizer makes of text: lower case, accents stripped."""
    return "".join(ch for ch in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(ch) != "Mn")


def _context_tokens(windows: Windows, row: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, offsets) of the context tokens of one window."""
    mask = windows.context_mask()[row]
    return windows.input_ids[row][mask], windows.offsets[row][mask]


# ---------------------------------------------------------------- the official metric


def test_normalize_answer_follows_the_official_order() -> None:
    # lower -> "the  cat's, hat!"; punctuation -> "the  cats hat"; articles -> "  cats hat"; spaces -> "cats hat"
    assert normalize_answer("The  Cat's, hat!") == "cats hat"
    # articles go only as whole words: "theatre" and "another" keep theirs
    assert normalize_answer("An apple a day at THE theatre, another") == "apple day at theatre another"
    # punctuation goes before articles: "a.m." -> "am" (not an article), "the-end" -> "theend"
    assert normalize_answer("a.m. the-end") == "am theend"
    # an article becomes a space, not nothing: between en dashes (not in string.punctuation) it splits the token
    assert normalize_answer("cat\u2013the\u2013dog") == "cat\u2013 \u2013dog"


def test_exact_match_is_the_best_over_golds() -> None:
    assert exact_match("The Cat.", ["cat"]) == 1.0  # "the cat." -> "cat"
    assert exact_match("cat sat", ["cat"]) == 0.0
    assert exact_match("Denver Broncos", ["broncos", "the Denver Broncos"]) == 1.0  # second gold
    assert exact_match("", ["cat"]) == 0.0
    # both normalize to "": the official script counts that as a match
    assert exact_match("the", ["a"]) == 1.0


def test_f1_token_overlap() -> None:
    # pred "the cat sat" -> [cat, sat]; gold "a cat sat down" -> [cat, sat, down]; 2 common
    # precision 2/2, recall 2/3: F1 = 2 * (1 * 2/3) / (1 + 2/3) = 0.8
    assert f1("the cat sat", ["a cat sat down"]) == pytest.approx(0.8)
    # max over golds: vs "dog" 0; vs "cat sat": precision 1, recall 1/2 -> 2/3
    assert f1("cat", ["dog", "cat sat"]) == pytest.approx(2 / 3)
    # common tokens count with multiplicity (Counter &): "cat cat" vs "cat" -> 1 common, P 1/2, R 1 -> 2/3
    assert f1("cat cat", ["cat"]) == pytest.approx(2 / 3)
    assert f1("", ["cat"]) == 0.0
    # no common token (here: no token at all) gives 0, even where exact match gives 1
    assert f1("the", ["a"]) == 0.0


def test_squad_scores_average_in_percent() -> None:
    predictions = ["Cat", "the cat sat", "dog"]
    golds = [["cat"], ["a cat sat down"], ["cat", "a cat"]]
    scores = squad_scores(predictions, golds)
    # EM: 1, 0, 0 -> 100/3; F1: 1, 0.8, 0 -> 100 * 1.8 / 3 = 60
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(60.0)
    assert scores["questions"] == 3


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: squad_scores(["a"], [["a"], ["b"]]), ValueError),
        (lambda: squad_scores([], []), ValueError),
        (lambda: exact_match("a", []), ValueError),
        (lambda: f1("a", "a"), TypeError),  # a bare string would be scored letter by letter
    ],
)
def test_metric_refuses_bad_input(call, error) -> None:
    with pytest.raises(error):
        call()


# ---------------------------------------------------------------- windows


@pytest.mark.registry
def test_long_context_windows_overlap_by_stride_and_map_back(backend: Tokenizer) -> None:
    seq_len, stride = 64, 16
    question = "Who jumped over the lazy dogs?"
    windows = make_windows(backend, [question], [LONG_CONTEXT], seq_len, stride)
    whole = backend.encode(LONG_CONTEXT, add_special_tokens=False).ids

    assert len(windows) > 3 and np.all(windows.example == 0)
    for name, array in windows.inputs().items():
        assert array.shape == (len(windows), seq_len) and array.dtype == np.int64, name
    assert windows.offsets.shape == (len(windows), seq_len, 2) and windows.offsets.dtype == np.int32

    pieces = [_context_tokens(windows, row) for row in range(len(windows))]
    for (ids, offsets), (next_ids, next_offsets) in zip(pieces, pieces[1:]):
        # exactly `stride` tokens shared: the next window starts at the stride-th last token of this one
        assert next_offsets[0].tolist() == offsets[-stride].tolist()
        assert next_ids[:stride].tolist() == ids[-stride:].tolist()
    # with the overlaps dropped, the windows spell the whole context, in order
    rebuilt = pieces[0][0].tolist() + [t for ids, _ in pieces[1:] for t in ids[stride:].tolist()]
    assert rebuilt == whole

    unk = backend.token_to_id("[UNK]")
    for ids, offsets in pieces:
        for token_id, (begin, end) in zip(ids.tolist(), offsets.tolist()):
            if token_id != unk:
                token = backend.id_to_token(token_id)
                assert _plain(LONG_CONTEXT[begin:end]) == token.removeprefix("##"), (token, begin, end)

    question_tokens = len(backend.encode(question, add_special_tokens=False).ids)
    for row in range(len(windows)):
        # [CLS] question [SEP] before the context, [SEP] and padding after it: none of them maps to the context
        assert np.all(windows.offsets[row, : question_tokens + 2] == -1)
        n_context = len(pieces[row][0])
        assert np.all(windows.offsets[row, question_tokens + 2 + n_context :] == -1)
        assert windows.attention_mask[row].sum() == question_tokens + 3 + n_context


@pytest.mark.registry
def test_make_windows_leaves_the_callers_tokenizer_alone(backend: Tokenizer) -> None:
    mine = Tokenizer.from_str(backend.to_str())
    mine.enable_truncation(10)
    before = mine.to_str()
    windows = make_windows(mine, ["who?", "what?"], [LONG_CONTEXT, "short"], seq_len=48, stride=8)
    assert mine.to_str() == before
    # the caller's truncation to 10 was not used: windows are 48 long and the short context has one window
    assert windows.input_ids.shape[1] == 48 and (windows.example == 1).sum() == 1


@pytest.mark.registry
def test_no_room_for_the_context_is_a_value_error(backend: Tokenizer) -> None:
    long_question = " ".join(["why"] * 70)
    with pytest.raises(ValueError, match="question 1 is 70 tokens: .* no context token fits in seq_len 64"):
        make_windows(backend, ["who?", long_question], ["a", "b"], seq_len=64, stride=8)
    # 64 - 3 special - 2 question tokens = 59 context tokens of room: a stride of 59 cannot advance
    with pytest.raises(ValueError, match="stride 59 must be less than the 59 context tokens"):
        make_windows(backend, ["who?"], [LONG_CONTEXT], seq_len=64, stride=59)
    make_windows(backend, ["who?"], [LONG_CONTEXT], seq_len=64, stride=58)


def test_windows_select_save_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    windows = Windows(
        input_ids=rng.integers(0, 100, (5, 8)),
        attention_mask=np.ones((5, 8), dtype=np.int64),
        token_type_ids=rng.integers(0, 2, (5, 8)),
        offsets=rng.integers(-1, 50, (5, 8, 2)).astype(np.int32),
        example=np.array([0, 0, 1, 2, 2], dtype=np.int64),
    )
    path = tmp_path / "windows"  # no suffix: the file must land exactly here
    windows.save(path)
    loaded = Windows.load(path)
    for name in ("input_ids", "attention_mask", "token_type_ids", "offsets", "example"):
        assert np.array_equal(getattr(loaded, name), getattr(windows, name)), name
        assert getattr(loaded, name).dtype == getattr(windows, name).dtype, name
    subset = windows.select(np.array([3, 4]))
    assert len(subset) == 2 and subset.example.tolist() == [2, 2]
    assert np.array_equal(subset.offsets, windows.offsets[3:5])
    assert windows.select(2).input_ids.shape == (1, 8)
    assert set(windows.inputs()) == {"input_ids", "attention_mask", "token_type_ids"}


# ---------------------------------------------------------------- gold positions and span decoding


def _one_hot_logits(windows: Windows, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits that peak at the gold tokens of windows holding the answer, flat elsewhere."""
    start = np.zeros(windows.input_ids.shape)
    end = np.zeros(windows.input_ids.shape)
    rows = np.flatnonzero(positions[:, 0] > 0)
    start[rows, positions[rows, 0]] = 10.0
    end[rows, positions[rows, 1]] = 10.0
    return start, end


def _whole_words(example: QAExample) -> bool:
    """Whether the first gold answer neither starts nor ends inside a word of the context."""
    text, start = example.answers[0]
    before = example.context[start - 1 : start]
    after = example.context[start + len(text) : start + len(text) + 1]
    return not before.isalnum() and not after.isalnum()


@pytest.mark.registry
def test_gold_positions_decode_back_to_the_gold_answers(backend: Tokenizer) -> None:
    # gold answers that are whole words; a few SQuAD golds are parts of a word ("gold" in "golden"),
    # which no token span can spell exactly
    examples = [e for e in load_squad("dev")[:80] + load_squad("unittest") if _whole_words(e)]
    assert len(examples) > 70
    windows = qa_windows(backend, examples, seq_len=128, stride=32)
    assert len(windows) > len(examples)  # some contexts need several windows
    positions = answer_positions(windows, examples)
    assert positions.shape == (len(windows), 2) and positions.dtype == np.int64
    context = windows.context_mask()
    for row, (start, end) in enumerate(positions.tolist()):
        if start:
            assert context[row, start] and context[row, end] and start <= end
    # every question has at least one window holding its answer
    assert set(windows.example[positions[:, 0] > 0].tolist()) == set(range(len(examples)))

    answers = best_spans(*_one_hot_logits(windows, positions), windows, [e.context for e in examples])
    scores = squad_scores([a.text for a in answers], [[text for text, _ in e.answers] for e in examples])
    assert scores["exact_match"] == 100.0
    assert [(a.start, a.end - a.start) for a in answers] == [(e.answers[0][1], len(e.answers[0][0])) for e in examples]


@pytest.mark.registry
def test_qa_windows_takes_a_transformers_tokenizer(hf_tokenizer, backend: Tokenizer) -> None:
    examples = load_squad("unittest")
    from_hf = qa_windows(hf_tokenizer, examples, seq_len=96, stride=16)
    from_backend = qa_windows(backend, examples, seq_len=96, stride=16)
    for name in ("input_ids", "attention_mask", "token_type_ids", "offsets", "example"):
        assert np.array_equal(getattr(from_hf, name), getattr(from_backend, name)), name
    padding = from_hf.input_ids[from_hf.attention_mask == 0]
    assert padding.size and np.all(padding == hf_tokenizer.pad_token_id)  # the tokenizer's own [PAD]


@pytest.mark.registry
def test_answer_across_a_window_boundary_comes_from_the_window_holding_it(backend: Tokenizer) -> None:
    context = " ".join(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"] * 8)
    seq_len, stride = 32, 8
    first = make_windows(backend, ["which?"], [context], seq_len, stride)
    _, offsets = _context_tokens(first, 0)
    # the last two context tokens of window 0 and the token after them: window 1 holds all three
    begin = int(offsets[-2, 0])
    end = context.index(" ", int(offsets[-1, 1]) + 1)
    example = QAExample("x", "which?", context, [(context[begin:end], begin)])

    windows = qa_windows(backend, [example], seq_len, stride)
    positions = answer_positions(windows, [example])
    assert positions[0].tolist() == [0, 0]  # window 0 has only part of the answer
    assert positions[1, 0] > 0 and positions[1, 1] - positions[1, 0] == 2
    assert np.all(positions[2:] == 0)
    [answer] = best_spans(*_one_hot_logits(windows, positions), windows, [context])
    assert (answer.text, answer.start, answer.end) == (context[begin:end], begin, end)


def _windows_for(backend: Tokenizer, context: str) -> tuple[Windows, list[int]]:
    """One window over a short context, and the positions of its context tokens."""
    windows = make_windows(backend, ["q?"], [context], seq_len=24, stride=4)
    return windows, np.flatnonzero(windows.context_mask()[0]).tolist()


@pytest.mark.registry
def test_end_before_start_and_too_long_spans_are_skipped(backend: Tokenizer) -> None:
    context = "one two three four five six seven eight nine ten"
    windows, token = _windows_for(backend, context)  # token[i]: position of the i-th word
    start, end = np.zeros((1, 24)), np.zeros((1, 24))
    start[0, token[7]], start[0, token[1]] = 10, 6  # best start "eight", then "two"
    end[0, token[2]], end[0, token[3]] = 10, 5  # best end "three", then "four"
    [answer] = best_spans(start, end, windows, [context])
    # (eight, three) and (eight, four) end before they start; (two, three) = 6 + 10 beats (two, four) = 11
    assert answer.text == "two three" and answer.logit == pytest.approx(16.0)

    start, end = np.zeros((1, 24)), np.zeros((1, 24))
    start[0, token[0]], start[0, token[3]] = 10, 2
    end[0, token[4]], end[0, token[1]] = 10, 3
    # "one".."five" = 20 is 5 tokens; within 3 tokens: (one, two) = 13 beats (four, five) = 12
    assert best_spans(start, end, windows, [context])[0].text == "one two three four five"
    assert best_spans(start, end, windows, [context], max_answer_tokens=3)[0].text == "one two"


@pytest.mark.registry
def test_score_is_the_softmax_over_valid_spans_and_non_context_is_ignored(backend: Tokenizer) -> None:
    context = "one two three"
    windows, token = _windows_for(backend, context)
    start, end = np.full((1, 24), 100.0), np.full((1, 24), 100.0)  # huge off the context: must not count
    start[0, token], end[0, token] = [1.0, 2.0, 0.5], [0.3, 1.5, 2.5]
    [answer] = best_spans(start, end, windows, [context])
    # the 6 spans with end >= start, by hand
    spans = {(i, j): start[0, token[i]] + end[0, token[j]] for i in range(3) for j in range(i, 3)}
    best = max(spans, key=spans.get)
    assert best == (1, 2) and answer.text == "two three"
    assert answer.logit == pytest.approx(4.5)
    assert answer.score == pytest.approx(math.exp(4.5) / sum(math.exp(v) for v in spans.values()))


@pytest.mark.registry
def test_questions_without_a_span_get_the_empty_answer(backend: Tokenizer) -> None:
    windows = make_windows(backend, ["q?", "q?", "q?"], ["one two", "", "three"], seq_len=24, stride=4)
    keep = windows.select(np.flatnonzero(windows.example != 2))  # question 2 loses its only window
    start = np.zeros((len(keep), 24))
    answers = best_spans(start, start, keep, ["one two", "", "three"])
    assert answers[0].text in {"one", "two", "one two"} and answers[0].score > 0
    assert answers[1] == answers[2] == Answer("", 0, 0, 0.0, float("-inf"))


def test_best_spans_checks_shapes() -> None:
    windows = Windows(*(np.zeros((2, 8), dtype=np.int64) for _ in range(3)),
                      offsets=np.full((2, 8, 2), -1, dtype=np.int32), example=np.array([0, 1]))
    with pytest.raises(ValueError, match="expected \\(2, 8\\)"):
        best_spans(np.zeros((2, 7)), np.zeros((2, 7)), windows, ["a", "b"])


def _squad_file(path: Path, articles: list[list[tuple[str, list[tuple[str, str, str, int]]]]]) -> Path:
    """Write articles of paragraphs (context, [(id, question, answer, answer_start)]) in SQuAD v1.1 format."""
    data = [
        {"title": f"t{a}", "paragraphs": [
            {"context": context, "qas": [
                {"id": qid, "question": question, "answers": [{"text": text, "answer_start": start}]}
                for qid, question, text, start in qas
            ]}
            for context, qas in paragraphs
        ]}
        for a, paragraphs in enumerate(articles)
    ]
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


def _article(n: int) -> list[tuple[str, list[tuple[str, str, str, int]]]]:
    """Two paragraphs of one question each."""
    paragraphs = []
    for p in range(2):
        context, answer = f"Paragraph {n}.{p} is about topic {n}{p}.", f"topic {n}{p}"
        paragraphs.append((context, [(f"q{n}.{p}", f"What is {n}.{p} about?", answer, context.index(answer))]))
    return paragraphs


def test_user_file_splits_whole_articles(tmp_path: Path) -> None:
    articles = [_article(n) for n in range(10)]
    # article 9 repeats a paragraph of article 0: it may not sit in both train and dev
    articles[9] = [articles[0][0], *articles[9][1:]]
    path = _squad_file(tmp_path / "mine.json", articles)
    for seed in range(8):  # some seeds put articles 0 and 9 on different sides
        splits = load_qa(str(path), seed=seed, dev_fraction=0.3)
        assert not {e.context for e in splits.train} & {e.context for e in splits.dev}, seed
    splits = load_qa(str(path), seed=3, dev_fraction=0.3)
    assert splits.name == "mine" and splits.test == []
    assert sorted(e.id for e in splits.train + splits.dev) == sorted(q[0] for a in articles for _, qs in a for q in qs)
    assert 3 <= len(splits.dev) <= 6  # 3 of 10 articles, 2 questions each, less any repeated paragraph
    assert load_qa(str(path), seed=3, dev_fraction=0.3).content_hash() == splits.content_hash()
    assert load_qa(str(path), seed=4, dev_fraction=0.3).content_hash() != splits.content_hash()
    assert (splits.num_labels, splits.label_names, splits.task) == (2, ("start", "end"), "qa")


def test_user_dev_file(tmp_path: Path) -> None:
    train = _squad_file(tmp_path / "train.json", [_article(0)])  # one article is fine when dev is given
    dev = _squad_file(tmp_path / "dev.json", [_article(1)])
    splits = load_qa(str(train), dev=str(dev))
    assert [e.id for e in splits.train] == ["q0.0", "q0.1"] and [e.id for e in splits.dev] == ["q1.0", "q1.1"]
    assert splits.train[0].answers == [("topic 00", 23)]


def test_content_hash_sees_every_field() -> None:
    example = QAExample("a", "q?", "ctx", [("ctx", 0)])
    hashes = {
        QASplits("x", [example], [example]).content_hash(),
        QASplits("x", [QAExample("b", "q?", "ctx", [("ctx", 0)])], [example]).content_hash(),
        QASplits("x", [QAExample("a", "q!", "ctx", [("ctx", 0)])], [example]).content_hash(),
        QASplits("x", [QAExample("a", "q?", "ctx.", [("ctx", 0)])], [example]).content_hash(),
        QASplits("x", [QAExample("a", "q?", "ctx", [("ct", 0)])], [example]).content_hash(),
        QASplits("x", [QAExample("a", "q?", "ctx", [("ctx", 1)])], [example]).content_hash(),
        QASplits("x", [example], [], [example]).content_hash(),
    }
    assert len(hashes) == 7 and all(len(h) == 16 for h in hashes)


GOOD = {"data": [{"title": "t", "paragraphs": [{"context": "The cat sat.", "qas": [
    {"id": "1", "question": "Who sat?", "answers": [{"text": "cat", "answer_start": 4}]},
]}]}]}


def _edited(edit) -> str:
    """GOOD, as JSON text, after `edit(paragraph, question, answer)` changed a copy of it."""
    payload = json.loads(json.dumps(GOOD))
    paragraph = payload["data"][0]["paragraphs"][0]
    edit(paragraph, paragraph["qas"][0], paragraph["qas"][0]["answers"][0])
    return json.dumps(payload)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{oops", "not JSON"),
        (json.dumps([1, 2]), "expected a JSON object with a 'data' list"),
        (json.dumps({"version": "1.1"}), "top level: missing key 'data'"),
        (_edited(lambda p, q, a: p.pop("context")), r"data\[0\]\.paragraphs\[0\]: missing key 'context'"),
        (_edited(lambda p, q, a: a.pop("text")), r"paragraphs\[0\]\.qas\[0\]\.answers\[0\]: missing key 'text'"),
        (_edited(lambda p, q, a: q.update(question=7)), r"qas\[0\]\.question: expected a string, got int"),
        (_edited(lambda p, q, a: q.update(answers=[])), r"qas\[0\] \(id 1\): a question without answers"),
        (_edited(lambda p, q, a: a.update(answer_start=5)), "answer_start 5 does not point at 'cat' in its context"),
        (json.dumps(GOOD), "only 1 article with questions"),
        (json.dumps({"data": []}), "no questions"),
    ],
)
def test_bad_squad_files_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_qa(str(path))
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path / 'nope.json'}: no such file"):
        load_qa(str(tmp_path / "nope.json"))
    train = _squad_file(tmp_path / "train.json", [_article(0)])
    (tmp_path / "dev.json").write_text(json.dumps({"data": [{"paragraphs": [{"context": "x"}]}]}))
    with pytest.raises(DataError, match=rf"{tmp_path / 'dev.json'}: data\[0\]\.paragraphs\[0\]: missing key 'qas'"):
        load_qa(str(train), dev=str(tmp_path / "dev.json"))


@pytest.mark.registry
def test_packaged_unittest_split() -> None:
    examples = load_squad("unittest")
    assert len(examples) == 10
    assert all(e.context[s : s + len(t)] == t for e in examples for t, s in e.answers)
    with pytest.raises(DataError, match="unknown SQuAD split 'test'"):
        load_squad("test")


def test_the_sliding_window_baseline_answers_from_the_question_words_neighbourhood() -> None:
    from edgenas.search.data.qa import QAExample, sliding_window_answer, sliding_window_scores

    context = ("The castle was built by King Edward in 1283. Its walls are made of grey limestone. "
               "The town market sells fresh fish every Friday morning.")
    assert sliding_window_answer("Who built the castle?", context) == "King Edward"
    assert "fresh fish" in sliding_window_answer("What does the town market sell?", context)  # no stemming: "sells"
    examples = [QAExample("1", "Who built the castle?", context, [("King Edward", 30)]),
                QAExample("2", "What are the walls made of?", context, [("grey limestone", 70)])]
    scores = sliding_window_scores(examples)
    assert scores["questions"] == 2 and 0 < scores["exact_match"] <= scores["f1"] <= 100
