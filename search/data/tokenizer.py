"""Tokenizers: BERT uncased WordPiece from the packaged vocab, or any local HF checkpoint's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

from edgenas.errors import EdgenasError
from edgenas.search.data.fetch import vocab_file


def load_tokenizer(path: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The packaged BERT uncased tokenizer, or the one saved in a local checkpoint directory."""
    if path is None:
        return BertTokenizerFast(vocab=str(vocab_file()), do_lower_case=True, model_max_length=512)
    directory = Path(path)
    if not directory.is_dir():
        raise EdgenasError(f"{directory}: tokenizer directory not found")
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EdgenasError(f"{directory}: no usable tokenizer ({str(exc).splitlines()[0]})") from None


def encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], seq_len: int,
           pairs: list[str] | None = None) -> dict[str, np.ndarray]:
    """Pad/truncate texts (or text pairs, [CLS] a [SEP] b [SEP] with token type 1 for b) to seq_len:
    int64 input_ids, attention_mask, token_type_ids."""
    batch = tokenizer(
        list(texts),
        None if pairs is None else list(pairs),
        max_length=seq_len,
        padding="max_length",
        truncation=True,
        return_token_type_ids=True,
        return_attention_mask=True,
        return_tensors="np",
    )
    return {key: np.asarray(batch[key], dtype=np.int64) for key in ("input_ids", "attention_mask", "token_type_ids")}
