"""Tokenizer: packaged vocab (md5-checked) and local checkpoint directories."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import BertTokenizerFast

from edgenas.errors import EdgenasError
from edgenas.search.data.tokenizer import encode, load_tokenizer


def test_local_checkpoint_round_trip(tiny_vocab: Path, tmp_path: Path) -> None:
    saved = tmp_path / "ckpt"
    BertTokenizerFast(vocab=str(tiny_vocab), do_lower_case=True).save_pretrained(saved)
    tok = load_tokenizer(saved)
    enc = encode(tok, ["The service is GOOD!", "bad phone"], seq_len=10)
    assert enc["input_ids"].shape == (2, 10) and enc["input_ids"].dtype.name == "int64"
    assert tok.decode(enc["input_ids"][0], skip_special_tokens=True) == "the service is good!"
    assert enc["attention_mask"][1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]


def test_missing_tokenizer_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EdgenasError, match="tokenizer directory not found"):
        load_tokenizer(tmp_path / "nope")


@pytest.mark.registry
def test_packaged_bert_uncased_vocab() -> None:
    tok = load_tokenizer()
    assert len(tok) == 30522
    enc = encode(tok, ["Hello World"], seq_len=6)
    assert enc["input_ids"][0].tolist() == [101, 7592, 2088, 102, 0, 0]
